"""Which checkpoint judges better, on the same images? Each model draws the eval's first images, and
every model's self-check judges every model's images.

The eval's own-verdict figures (`verdict_accuracy_own`) score each checkpoint on the images it drew
itself, so an RL − SFT difference mixes a better reader with different images to read (RL changes
which images fail, and how). Here the images are held fixed: for each drawing model, the first
images of the eval's introspective trajectories (same prompts, seeds and sampling as `coevolve
eval`, so the same images), judged by each model's describe-then-answer self-check
(`JanusAdapter.judge`, as the `self_check` program and the held-out verdicts read P(yes)), with
one seeded generator per judge so both judges sample descriptions from the same stream.

Prints, per drawing model, the P(yes) AUC within a category (the eval's `auc_within_category`) of
each judge, and the paired difference of the last judge minus the first with a 95% interval from
resampling the prompts (the same resampled images for both judges, so the images' own sampling
noise cancels).

    python benchmarks/cross_judge.py --model sft=runs/shapes/checkpoints/sft --model rl=runs/shapes/checkpoints/rl/coevolve \\
        --prompts-per-category 400
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from coevolve.data.shapes import TAGS, as_verifiable, verify
from coevolve.eval.shapes import ShapesEvalConfig, eval_trajectories, p_yes_auc, shapes_prompts
from coevolve.model import JanusAdapter
from coevolve.model.guidance import Guidance
from coevolve.trajectory import IMAGE


def within(p_yes: np.ndarray, truth: np.ndarray, tags: np.ndarray) -> float:
    """The eval's `auc_within_category`; NaN where no category has both classes."""
    auc = p_yes_auc(p_yes, truth, tags)
    return float("nan") if auc is None else auc


def judge(adapter: JanusAdapter, images: list, prompts: list[str], config: ShapesEvalConfig) -> np.ndarray:
    # Every judge samples its descriptions from the same stream, apart from the drawing's.
    generator = torch.Generator().manual_seed(config.seed + 7)
    p_yes = []
    for start in range(0, len(images), config.batch_size):
        end = start + config.batch_size
        p_yes += adapter.judge(
            images[start:end],
            prompts[start:end],
            sampling=config.sampling,
            generator=generator,
            max_description_tokens=config.max_caption_tokens,
        ).p_yes.tolist()
    return np.asarray(p_yes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="LABEL=PATH",
        help="a checkpoint and its label, at least two; the paired difference is last minus first",
    )
    parser.add_argument("--prompts-per-category", type=int, default=400)
    parser.add_argument("--seed", type=int, default=ShapesEvalConfig.seed, help="the eval's seed (eval.seed)")
    parser.add_argument("--unconditional", default="pad", help="model.unconditional of the recipe")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    malformed = [item for item in args.model if "=" not in item or not all(item.split("=", 1))]
    if malformed:
        raise SystemExit(f"--model {malformed[0]!r}: expected LABEL=PATH")
    models = dict(item.split("=", 1) for item in args.model)
    if len(models) < 2 or len(models) != len(args.model):
        raise SystemExit(f"--model: give at least two checkpoints with distinct labels, got {args.model}")
    config = ShapesEvalConfig(num_prompts_per_category=args.prompts_per_category, seed=args.seed)
    guidance = Guidance(config.guidance_weight, args.unconditional)
    examples = shapes_prompts(config.num_prompts_per_category, config.seed)
    prompts = [example.prompt for example in examples]
    tags = np.asarray([example.tag for example in examples])
    adapters = {label: JanusAdapter.from_pretrained(path) for label, path in models.items()}
    for adapter in adapters.values():
        adapter.model.eval()
    labels = list(models)
    first, last = labels[0], labels[-1]
    rng = np.random.default_rng(0)
    print(
        f"{len(prompts)} prompts ({config.num_prompts_per_category} per category of {len(TAGS)}), eval seed {config.seed}"
    )
    print(
        "| images drawn by | accepted | "
        + " | ".join(f"judged by {label}" for label in models)
        + f" | {last} − {first} [95%] |"
    )
    print("| --- | --- | " + " | ".join("---" for _ in models) + " | --- |")
    for drawer, adapter in adapters.items():
        _, trajectories = eval_trajectories(adapter, config, guidance, max_rounds=1)
        images = [trajectory.image(IMAGE) for trajectory in trajectories]
        truth = np.asarray(
            [verify(as_verifiable(image), example.metadata).correct for image, example in zip(images, examples)]
        )
        p_yes = {label: judge(judge_adapter, images, prompts, config) for label, judge_adapter in adapters.items()}
        auc = {label: within(p, truth, tags) for label, p in p_yes.items()}
        differences = []
        for _ in range(args.resamples):
            rows = rng.integers(0, len(prompts), len(prompts))
            differences.append(
                within(p_yes[last][rows], truth[rows], tags[rows]) - within(p_yes[first][rows], truth[rows], tags[rows])
            )
        low, high = np.nanpercentile(differences, [2.5, 97.5])
        print(
            f"| {drawer} | {truth.mean():.3f} | "
            + " | ".join(f"{auc[label]:.3f}" for label in models)
            + f" | {auc[last] - auc[first]:+.3f} [{low:+.3f}, {high:+.3f}] |",
            flush=True,
        )


if __name__ == "__main__":
    main()
