"""Per-tensor checksums of a state dict: what the learner and each rollout actor report so that a
test (or a user chasing a stale worker) can see they hold the very same weights, bit for bit."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def tensor_checksum(tensor: torch.Tensor) -> str:
    """sha256 (hex) over a tensor's dtype, shape and raw bytes (a CPU copy when it lives elsewhere):
    equal digests mean bitwise-equal tensors of the same dtype and shape."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy())  # any dtype (bfloat16 too), as bytes
    return digest.hexdigest()


def state_checksums(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Key -> `tensor_checksum` of every tensor of `state_dict` (tied weights under each of their keys)."""
    return {key: tensor_checksum(value) for key, value in state_dict.items()}
