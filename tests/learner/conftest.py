"""The learner tests run DeepSpeed in the test process (one rank of a world of one): each module
gets the environment and the process group back when it is done, so no other test — nor a
subprocess that would inherit MASTER_PORT of a port still held here — sees them."""

from __future__ import annotations

import os
import sys

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_process_world():
    saved = dict(os.environ)
    yield
    comm = sys.modules.get("deepspeed.comm")
    if comm is not None and comm.is_initialized():
        comm.destroy_process_group()
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)
