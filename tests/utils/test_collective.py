"""The weight group (coevolve/utils/collective.py) over gloo, its ranks as threads of this process:
bit-exact transfer of any dtype in buckets, a second generation formed on the same store with other
members, and the errors for mismatched receivers and for ranks sharing a GPU under NCCL."""

from __future__ import annotations

import threading

import pytest
import torch

from coevolve.utils.collective import (
    WeightGroup,
    check_distinct_gpus,
    check_targets,
    manifest_of,
    plan_buckets,
    serve_store,
)

HOST = "127.0.0.1"


def source() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(64, 32, generator=generator),  # 8 KiB
        "b": torch.randn(7, generator=generator).to(torch.bfloat16),
        "steps": torch.arange(5),
        "flag": torch.tensor(True),
        "big": torch.randn(4096, generator=generator),  # 16 KiB: more than a bucket on its own
    }


def test_buckets_keep_the_order_and_hold_at_most_the_limit_unless_one_tensor_is_larger():
    manifest = manifest_of(source())
    buckets = plan_buckets(manifest, bucket_bytes=10_000)
    assert [[index for index, _, _ in bucket] for bucket in buckets] == [[0, 1, 2, 3], [4]]
    assert buckets[0] == [(0, 0, 8192), (1, 8192, 14), (2, 8206, 40), (3, 8246, 1)]
    assert buckets[1] == [(4, 0, 16384)]
    with pytest.raises(ValueError, match="bucket_bytes"):
        plan_buckets(manifest, 0)


def run_ranks(store, ranks: int, generation: int, sent: dict, receivers: list[dict], bucket_bytes: int) -> list:
    """Form generation `generation` with `ranks` members (threads), broadcast `sent`; returns each rank's byte count."""
    manifest = manifest_of(sent)
    groups, counts, errors = [None] * ranks, [None] * ranks, []

    def member(rank: int) -> None:
        try:
            groups[rank] = WeightGroup(HOST, store.port, rank, ranks, generation, "gloo", manifest, bucket_bytes,
                                       30.0, HOST, store=store if rank == 0 else None)  # fmt: skip
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def transfer(rank: int) -> None:
        group = groups[rank]
        counts[rank] = group.broadcast(sent) if rank == 0 else group.receive(receivers[rank - 1])

    for step in (member, transfer):
        threads = [threading.Thread(target=step, args=(rank,)) for rank in range(ranks)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
    for group in groups:
        group.close()
    return counts


def test_a_broadcast_copies_every_tensor_bit_for_bit_and_a_new_generation_forms_on_the_same_store():
    store = serve_store(HOST, 30.0)
    sent = source()
    receivers = [{key: torch.zeros_like(value) for key, value in sent.items()} for _ in range(2)]
    views = [dict(receiver) for receiver in receivers]  # the same tensors: written in place
    counts = run_ranks(store, 3, 1, sent, receivers, bucket_bytes=10_000)
    total = sum(value.numel() * value.element_size() for value in sent.values())
    assert counts == [total, total, total]
    for receiver, view in zip(receivers, views):
        assert all(torch.equal(receiver[key], sent[key]) and receiver[key] is view[key] for key in sent)

    # Generation 2 on the same store with one receiver fewer (another membership), new values.
    changed = {key: value + 1 if value.dtype != torch.bool else ~value for key, value in sent.items()}
    run_ranks(store, 2, 2, changed, receivers[:1], bucket_bytes=2**20)
    assert all(torch.equal(receivers[0][key], changed[key]) for key in sent)
    assert all(torch.equal(receivers[1][key], sent[key]) for key in sent)  # not a member: untouched


def test_a_receiver_whose_tensors_differ_is_refused():
    manifest = manifest_of(source())
    good = {key: torch.zeros_like(value) for key, value in source().items()}
    check_targets(manifest, good)
    with pytest.raises(ValueError, match=r"missing \['big'\]"):
        check_targets(manifest, {key: value for key, value in good.items() if key != "big"})
    with pytest.raises(ValueError, match=r"w is \(64, 32\) torch.float16 here, \(64, 32\) float32 on the learner"):
        check_targets(manifest, {**good, "w": good["w"].half()})
    with pytest.raises(ValueError, match="w is not contiguous"):
        check_targets(manifest, {**good, "w": torch.zeros(32, 64).t()})


def test_nccl_needs_one_gpu_per_rank():
    check_distinct_gpus([("learner", "node-a", ("0",)), ("intro/rollout/0", "node-a", ("1",)),
                         ("recon/rollout/0", "node-b", ("0",))])  # fmt: skip
    with pytest.raises(ValueError, match=r"learner and intro/rollout/0 share GPU 0 .*rl.weight_sync=object_store"):
        check_distinct_gpus([("learner", "node-a", ("0",)), ("intro/rollout/0", "node-a", ("0",))])
    with pytest.raises(ValueError, match="intro/rollout/0 holds no GPU"):
        check_distinct_gpus([("learner", "node-a", ("0",)), ("intro/rollout/0", "node-a", ())])
