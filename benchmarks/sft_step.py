"""Where an SFT step's time goes, measured side by side in one run.

    python benchmarks/sft_step.py --model runs/shapes/checkpoints/tiny [--recipe shapes] [--phase mix] [--batches 6]

On batches of the recipe's SFT phase (`--phase`, its task mixture and batch size), alternating
batch by batch, prints the median seconds of:
- collating a batch with its decoded judge images in one VQ decoder pass (`TaskMixture.collate`)
  and with each decoded one at a time (`TaskMixture.example` per row), and their ratio;
- the training step (forward, backward, AdamW) in float32 and under bfloat16 autocast, their ratio,
  and the loss of each on the same batch.
"""

import argparse
import statistics
import time

import torch

from coevolve.config import compose_config, to_typed
from coevolve.config.schema import TASKS
from coevolve.model import JanusAdapter
from coevolve.sft.data import TaskMixture, load_sft_records, prepare_records
from coevolve.sft.tasks import TaskBuilder
from coevolve.sft.trainer import joint_loss

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--recipe", default="shapes")
parser.add_argument("--phase", default="mix")
parser.add_argument("--batches", type=int, default=6)
parser.add_argument("--examples", type=int, default=400, help="records drawn from")
args = parser.parse_args()

config = to_typed(
    compose_config([f"recipe={args.recipe}", f"model.path={args.model}", f"data.num_examples={args.examples}"])
)
phases = dict(config.sft.phase_configs())
if args.phase not in phases:
    raise SystemExit(f"--phase {args.phase!r}: recipe {args.recipe} has phases {list(phases)}")
sft = phases[args.phase]
adapter = JanusAdapter.from_pretrained(args.model)
adapter.model.model.vqmodel.requires_grad_(False)
adapter.model.train()
records = load_sft_records(
    config.data, config.seed, {task: sft.tasks.weights()[task] for task in TASKS}, adapter.self_check
)
mixture = TaskMixture(
    prepare_records(adapter, records),
    TaskBuilder(adapter, sft.loss_weights, config.model.unconditional),
    sft,
    config.seed,
)
size = sft.per_device_batch_size
rows = mixture.rows(size * (args.batches + 1))
batches = [[rows[i] for i in range(b * size, (b + 1) * size)] for b in range(args.batches + 1)]


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


collate = {"batched": [], "one at a time": []}
for batch in batches:
    collate["batched"].append(timed(lambda batch=batch: mixture.collate(batch))[0])
    collate["one at a time"].append(timed(lambda batch=batch: [mixture.example(row) for row in batch])[0])
decoded = sum(row["task"] == "judge" and row["decoded"] for batch in batches for row in batch)
print(
    f"phase {args.phase}: batch {size}, {decoded / len(batches):.1f} decoded judge images a batch, {torch.get_num_threads()} threads"
)
for name, seconds in collate.items():
    print(f"collate, {name}: {statistics.median(seconds):.4f} s")
print(
    f"  ratio one at a time / batched: {statistics.median(collate['one at a time']) / statistics.median(collate['batched']):.2f}"
)

optimizer = torch.optim.AdamW([p for p in adapter.model.parameters() if p.requires_grad], lr=1e-5)


def step(batch: dict, bf16: bool) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss, _ = joint_loss(adapter.model, adapter.spec, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())


collated = [mixture.collate(batch) for batch in batches]
step(collated[0], False)  # warm-up: allocator, oneDNN kernels
step(collated[0], True)
steps = {False: [], True: []}
losses = {False: [], True: []}
for batch in collated[1:]:
    for bf16 in (False, True):
        seconds, loss = timed(lambda batch=batch, bf16=bf16: step(batch, bf16))
        steps[bf16].append(seconds)
        losses[bf16].append(loss)
for bf16, name in ((False, "float32"), (True, "bf16 autocast")):
    print(
        f"train step, {name}: {statistics.median(steps[bf16]):.4f} s (losses {', '.join(f'{x:.3f}' for x in losses[bf16])})"
    )
print(f"  ratio float32 / bf16 autocast: {statistics.median(steps[False]) / statistics.median(steps[True]):.2f}")
