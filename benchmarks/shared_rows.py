"""Teacher-forced scoring of mixed SFT batches: sequences sharing trunk rows vs one row each.

    python benchmarks/shared_rows.py --model runs/shapes/checkpoints/tiny

Times forward + backward of `coevolve.model.scoring.score` on the same mixed batches of the
shapes recipe both ways, alternating, and prints JSON: seconds per batch (median), the speedup,
the share of padding in the one-row-each batches, and the largest log-prob difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from coevolve.config import compose_config, to_typed
from coevolve.data.records import shapes_records
from coevolve.model.adapter import JanusAdapter
from coevolve.model.guidance import CFGMode
from coevolve.model.packing import pack
from coevolve.model.scoring import score
from coevolve.sft.data import TaskMixture, prepare_records
from coevolve.sft.tasks import TaskBuilder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()

    config = to_typed(compose_config(["recipe=shapes"]))
    adapter = JanusAdapter.from_pretrained(args.model)
    adapter.model.train()
    records = prepare_records(adapter, shapes_records(300, config.seed))
    builder = TaskBuilder(adapter, config.sft.loss_weights, config.model.unconditional)
    mixture = TaskMixture(records, builder, config.sft, config.seed)
    size = config.sft.per_device_batch_size
    batches = [mixture.collate([mixture.draw(i) for i in range(b * size, (b + 1) * size)]) for b in range(args.batches)]

    def step(sequences, share_rows: bool) -> list[torch.Tensor]:
        scores = score(adapter.model, adapter.spec, sequences, mode=CFGMode.CONDITIONAL, share_rows=share_rows)
        logprobs = [lp for row in scores.logprobs for lp in row if lp is not None]
        (-torch.cat(logprobs).mean()).backward()
        adapter.model.zero_grad(set_to_none=True)
        return [lp.detach() for lp in logprobs]

    seconds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for share_rows in (False, True):
            start = time.perf_counter()
            for batch in batches:
                step(batch["sequences"], share_rows)
            seconds[share_rows].append((time.perf_counter() - start) / len(batches))
    difference = max(
        float((a - b).abs().max())
        for batch in batches
        for a, b in zip(step(batch["sequences"], True), step(batch["sequences"], False))
    )
    masks = [pack(batch["sequences"], adapter.spec, "right").attention_mask for batch in batches]
    padding = 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    shared, alone = statistics.median(seconds[True]), statistics.median(seconds[False])
    print(
        json.dumps(
            {
                "seconds_per_batch": {"shared_rows": round(shared, 4), "one_row_each": round(alone, 4)},
                "speedup": round(alone / shared, 3),
                "padding_share_one_row_each": round(padding, 3),
                "max_logprob_difference": difference,
                "runs": {"shared_rows": seconds[True], "one_row_each": seconds[False]},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
