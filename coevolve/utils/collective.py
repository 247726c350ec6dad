"""A process group that broadcasts the policy's weights from the learner to the rollout workers
(`rl.weight_sync: collective`; coevolve/rl/weight_sync.py decides when, this module how).

The group is made of torch.distributed's backend classes directly (`ProcessGroupGloo`,
`ProcessGroupNCCL`) over a `TCPStore`, not through `init_process_group`: a process has one default
group at most, and the learner's already has one when its engine is DeepSpeed (a world of one).
The learner hosts the store on a free port of its node (`serve_store`); each member joins with its
rank, rank 0 being the learner. A group is one *generation*: member `rank` of generation `g`
rendezvous through `PrefixStore("weights/g", store)`, so a new group (a worker was restarted or
replaced) forms on the same store, with nothing left over from the old one.

What travels: the tensors a `Manifest` lists (key, shape, dtype, in the learner's order) as raw
bytes, packed into buckets of at most `bucket_bytes` (a tensor larger than that is a bucket of its
own); each bucket is one `broadcast` from rank 0, and each receiver copies its pieces into its own
tensors in place. Bytes, not values: any dtype (bfloat16, integer buffers) arrives bit for bit, and
the receivers' tensors must have the manifest's shapes and dtypes (checked when they join).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

BACKENDS = ("gloo", "nccl")

Manifest = list[tuple[str, tuple[int, ...], str]]
"""(key, shape, dtype name) of every tensor sent, in the order they are packed."""


def manifest_of(tensors: Mapping[str, torch.Tensor]) -> Manifest:
    return [(key, tuple(value.shape), str(value.dtype).removeprefix("torch.")) for key, value in tensors.items()]


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    count = 1
    for size in shape:
        count *= size
    return count * torch.empty((), dtype=getattr(torch, dtype)).element_size()


def plan_buckets(manifest: Manifest, bucket_bytes: int) -> list[list[tuple[int, int, int]]]:
    """Consecutive buckets of `(manifest index, byte offset in the bucket, bytes)`, each at most
    `bucket_bytes` long unless it holds a single larger tensor. Every member computes the same plan
    from the same manifest."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    buckets: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    filled = 0
    for index, (_, shape, dtype) in enumerate(manifest):
        size = _nbytes(shape, dtype)
        if current and filled + size > bucket_bytes:
            buckets.append(current)
            current, filled = [], 0
        current.append((index, filled, size))
        filled += size
    if current:
        buckets.append(current)
    return buckets


def check_targets(manifest: Manifest, targets: Mapping[str, torch.Tensor]) -> None:
    """A receiver's tensors must be the manifest's, key for key (the bytes are copied blindly)."""
    keys = [key for key, _, _ in manifest]
    missing, extra = sorted(set(keys) - set(targets)), sorted(set(targets) - set(keys))
    if missing or extra:
        raise ValueError(f"weight group: the receiver's weights differ from the learner's: missing {missing[:5]}, "
                         f"extra {extra[:5]}")  # fmt: skip
    for key, shape, dtype in manifest:
        target = targets[key]
        if tuple(target.shape) != shape or str(target.dtype).removeprefix("torch.") != dtype:
            raise ValueError(
                f"weight group: {key} is {tuple(target.shape)} {target.dtype} here, {shape} {dtype} on the learner "
                "(learner and rollout workers must load the same checkpoint in the same model.dtype)"
            )
        if not target.is_contiguous():
            raise ValueError(f"weight group: {key} is not contiguous here, so it cannot be written in place")


def serve_store(host: str, timeout_s: float) -> dist.TCPStore:
    """The group's store, listening on a free port of `host` (its `.port`); kept for the run."""
    return dist.TCPStore(host, 0, None, is_master=True, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=timeout_s))  # fmt: skip


def _backend(store, rank: int, world_size: int, backend: str, host: str, timeout: datetime.timedelta):
    if backend == "gloo":
        options = dist.ProcessGroupGloo._Options()
        options._timeout = timeout
        # Bound to the node's own address (as Ray names it), not whatever the hostname resolves to.
        options._devices = [dist.ProcessGroupGloo.create_device(hostname=host)]
        return dist.ProcessGroupGloo(store, rank, world_size, options)
    if not dist.is_nccl_available():
        raise RuntimeError("weight group: backend nccl needs a CUDA build of torch with NCCL")
    options = dist.ProcessGroupNCCL.Options()
    options._timeout = timeout
    return dist.ProcessGroupNCCL(store, rank, world_size, options)


class WeightGroup:
    """This process's membership of generation `generation` of the weight group.

    Rank 0 (the learner) calls `broadcast`, every other rank `receive`, each once per sync; all
    of them block until the bucket transfers are done. `host` is this process's node address
    (gloo binds to it); the store is `store` on rank 0 and is reached at `store_host:port` elsewhere.
    """

    def __init__(
        self,
        store_host: str,
        port: int,
        rank: int,
        world_size: int,
        generation: int,
        backend: str,
        manifest: Manifest,
        bucket_bytes: int,
        timeout_s: float,
        host: str,
        store: dist.Store | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"weight group: backend must be one of {BACKENDS}, got {backend!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"weight group: rank {rank} is outside a world of {world_size}")
        timeout = datetime.timedelta(seconds=timeout_s)
        if store is None:
            store = dist.TCPStore(store_host, port, None, is_master=False, timeout=timeout)
        self.rank, self.world_size, self.generation, self.backend = rank, world_size, generation, backend
        self.manifest, self.buckets = manifest, plan_buckets(manifest, bucket_bytes)
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        self._store = store  # a client store must outlive the group
        self._group = _backend(dist.PrefixStore(f"weights/{generation}", store), rank, world_size, backend, host,
                               timeout)  # fmt: skip

    def _broadcast(self, bucket: torch.Tensor) -> None:
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self._group.broadcast([bucket], options).wait()

    @torch.no_grad()
    def broadcast(self, tensors: Mapping[str, torch.Tensor]) -> int:
        """Rank 0: send `tensors` (the manifest's keys) to every other rank; returns the bytes sent."""
        if self.rank != 0:
            raise RuntimeError("weight group: only rank 0 broadcasts")
        sent = 0
        for bucket_plan in self.buckets:
            size = sum(nbytes for _, _, nbytes in bucket_plan)
            bucket = torch.empty(size, dtype=torch.uint8, device=self.device)
            for index, offset, nbytes in bucket_plan:
                source = tensors[self.manifest[index][0]].detach().contiguous().reshape(-1)
                bucket[offset : offset + nbytes].copy_(source.view(torch.uint8))
            self._broadcast(bucket)
            sent += size
        self._synchronize()
        return sent

    @torch.no_grad()
    def receive(self, targets: Mapping[str, torch.Tensor]) -> int:
        """Rank > 0: overwrite `targets` (contiguous, the manifest's keys, shapes and dtypes) in place
        with rank 0's tensors; returns the bytes received."""
        if self.rank == 0:
            raise RuntimeError("weight group: rank 0 sends, it does not receive")
        received = 0
        for bucket_plan in self.buckets:
            size = sum(nbytes for _, _, nbytes in bucket_plan)
            bucket = torch.empty(size, dtype=torch.uint8, device=self.device)
            self._broadcast(bucket)
            for index, offset, nbytes in bucket_plan:
                target = targets[self.manifest[index][0]]
                target.reshape(-1).view(torch.uint8).copy_(bucket[offset : offset + nbytes])
            received += size
        self._synchronize()
        return received

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        """Leave the group (a newer generation replaces it)."""
        group, self._group = self._group, None
        if group is not None and hasattr(group, "shutdown"):
            try:
                group.shutdown()
            except RuntimeError:
                pass  # a peer already gone: nothing left to shut down


def check_distinct_gpus(members: Sequence[tuple[str, str, tuple[str, ...]]]) -> None:
    """NCCL puts one rank on one GPU: raise naming the first two members (name, node id, GPU ids)
    that share a GPU, as colocated fractional-GPU actors do."""
    seen: dict[tuple[str, str], str] = {}
    for name, node, gpus in members:
        if not gpus:
            raise ValueError(f"rl.weight_sync=collective with nccl: {name} holds no GPU")
        for gpu in gpus:
            other = seen.setdefault((node, gpu), name)
            if other != name:
                raise ValueError(
                    f"rl.weight_sync=collective: {other} and {name} share GPU {gpu} of node {node[:12]}, and NCCL "
                    "needs one GPU per rank; give each actor its own GPU, or use rl.weight_sync=object_store "
                    "for actors colocated on one GPU"
                )
