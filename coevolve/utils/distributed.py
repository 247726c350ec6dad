"""The process group DeepSpeed needs, for a process started by plain `python`."""

from __future__ import annotations

import importlib
import os
import socket
import sys


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def single_process_distributed_env() -> None:
    """DeepSpeed needs a process group even for one process. A launcher (`deepspeed`, `torchrun`,
    `accelerate launch`) sets these variables; started by plain `python`, this process is rank 0
    of a world of one."""
    if "WORLD_SIZE" in os.environ:
        return
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        RANK="0",
        LOCAL_RANK="0",  # accelerate initialises DeepSpeed's process group only when LOCAL_RANK is set
        WORLD_SIZE="1",
        LOCAL_WORLD_SIZE="1",
    )
    # DeepSpeed's first process-group init compiles its shared-memory all-reduce op (a minute of
    # C++ on 2 cores, and a compiler on the machine), which only serves several ranks on one host.
    # With one rank, gloo alone is enough: skip the build.
    importlib.import_module("deepspeed.comm.torch")
    torch_comm = sys.modules["deepspeed.comm.torch"]  # the attribute of deepspeed.comm is torch itself
    if hasattr(torch_comm, "build_shm_op"):
        torch_comm.build_shm_op = lambda: None
