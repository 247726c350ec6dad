"""Can a checkpoint read its own images? The describing self-check judges the model's image over its
own description of it; this prints how often that description is true of the image.

1. Own first images (the eval's prompts, `--per-category` each, drawn as the eval draws them,
   no regeneration): the share whose self-check description the verifier finds true of the image
   (`parse_caption` → `verify`: exactly the objects it names), how the others are wrong (more or
   fewer objects than the verifier detects, the same count with a wrong colour or shape, not a
   caption), P(yes) on images the verifier accepts against those it rejects, and what an exact
   comparison over the description would score: the description's scene drawn by the world's
   renderer and verified against the prompt, as a Yes/No against the verifier's verdict on the
   image (balanced accuracy): the most a self-check that judges through this description can reach.
2. Renders, clean and with `add_debris` fragments (shapes narrower than the verifier's smallest
   object, which it passes over): caption accuracy and captions naming exactly the objects.

    python benchmarks/own_reading.py --model runs/shapes/checkpoints/sft
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from coevolve.data.shapes import TAGS, add_debris, as_verifiable, derive_seed, detect, sample_example, verify
from coevolve.data.shapes.describe import caption_objects, parse_caption, scene_objects, verify_described
from coevolve.eval.shapes import p_yes_auc, shapes_prompts
from coevolve.model import JanusAdapter
from coevolve.model.guidance import Guidance
from coevolve.rollout.programs import IntrospectiveT2I, RolloutItem
from coevolve.trajectory import DESCRIPTION, IMAGE, Trajectory


def how_wrong(description: str, image) -> str:
    named = caption_objects(description)
    if named is None:
        return "not a caption"
    seen = Counter((d.color, d.shape) for d in detect(image))
    if named == seen:
        return "objects right"
    said, found = sum(named.values()), sum(seen.values())
    return "names more objects" if said > found else "names fewer objects" if said < found else "wrong colour/shape"


def describing_adapter(path: str) -> JanusAdapter:
    """The checkpoint at `path`, in eval mode; refused unless its self-check describes the image."""
    adapter = JanusAdapter.from_pretrained(path)
    if adapter.self_check != "describe":
        raise SystemExit(f"{path}: its self-check does not describe the image (self_check: {adapter.self_check})")
    adapter.model.eval()
    return adapter


@torch.no_grad()
def first_images(adapter: JanusAdapter, examples: list, seed: int, guidance: float) -> list[Trajectory]:
    """One introspective trajectory per example, stopped after the first image's self-check (each
    row seeded on its own, so the batch size does not matter)."""
    program = IntrospectiveT2I(adapter, seed=seed, guidance=Guidance(guidance, "pad"), regenerate="never",
                               max_rounds=1)  # fmt: skip
    trajectories = []
    for start in range(0, len(examples), 48):
        batch = examples[start : start + 48]
        trajectories += program([RolloutItem(str(start + i), e.prompt) for i, e in enumerate(batch)])
    return trajectories


def exact_comparison(description: str, metadata: dict) -> bool:
    """What a self-check that judges through `description` at its word would answer (`verify_described`)."""
    verdict = verify_described(description, metadata)
    return verdict is not None and verdict.correct


def comparison_figures(compared: list[bool], accepted: list[bool], tags: list[str]) -> str:
    """The exact comparison's Yes/No against the verifier: balanced accuracy pooled, and the AUC
    within a category (the eval's `auc_within_category`), which a verdict that knows only which
    categories the generator fails cannot lift above 0.5."""
    within = p_yes_auc([float(c) for c in compared], list(accepted), tags)
    return f"balanced accuracy {balanced_accuracy(compared, accepted):.3f}, AUC within a category {within:.3f}"


def balanced_accuracy(said_yes, truth) -> float:
    """The mean of the share of Yes on true cases and of No on false ones (boolean sequences)."""
    said_yes, truth = np.asarray(said_yes, dtype=bool), np.asarray(truth, dtype=bool)
    return float((said_yes[truth].mean() + (~said_yes[~truth]).mean()) / 2)


def add_probe_arguments(parser: argparse.ArgumentParser, steps: int, batch: int, every: int) -> None:
    """The flags of the probes that train on the model's own first images (`own_judge_probe.py`,
    `own_caption_probe.py`): the checkpoint, how many images and how many of them train, the run."""
    parser.add_argument("--model", required=True, help="a Janus checkpoint directory (a describing self-check)")
    parser.add_argument("--images", type=int, default=720)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--every", type=int, default=every)


def check_probe_arguments(args: argparse.Namespace) -> None:
    if not 0 < args.train < args.images:
        raise SystemExit(f"--train must lie between 0 and --images ({args.images}), got {args.train}")
    if not 0 < args.batch <= args.train:
        raise SystemExit(f"--batch must lie between 1 and --train ({args.train}), got {args.batch}")


def own_images(adapter: JanusAdapter, per_category: int, guidance: float) -> None:
    examples = shapes_prompts(per_category, 0)
    trajectories = first_images(adapter, examples, 0, guidance)
    rows = []
    for example, trajectory in zip(examples, trajectories):
        image = as_verifiable(trajectory.image(IMAGE))
        description = trajectory.text(DESCRIPTION)
        claims = parse_caption(description)
        rows.append({
            "accepted": verify(image, example.metadata).correct,
            "compared": exact_comparison(description, example.metadata),
            "true": claims is not None and verify(image, claims).correct,
            "kind": how_wrong(description, image),
            "p_yes": trajectory.info["p_yes"],
            "tag": example.tag,
        })  # fmt: skip
    n = len(rows)
    print(f"own first images: {n}; accepted by the verifier {sum(r['accepted'] for r in rows)}")
    print(f"  self-check description true of the image: {sum(r['true'] for r in rows)} / {n}")
    print("  objects named:", dict(Counter(r["kind"] for r in rows).most_common()))
    accepted = [r["p_yes"] for r in rows if r["accepted"]]
    rejected = [r["p_yes"] for r in rows if not r["accepted"]]
    if accepted and rejected:
        print(f"  P(yes): accepted images {np.mean(accepted):.2f}, rejected {np.mean(rejected):.2f}")
        columns = ([r[key] for r in rows] for key in ("compared", "accepted", "tag"))
        print(f"  exact comparison over the description: {comparison_figures(*columns)}")
        for tag in TAGS:
            mine = [r for r in rows if r["tag"] == tag]
            said_yes = [[r["compared"] for r in mine if r["accepted"] == truth] for truth in (True, False)]
            rates = " ".join(f"{np.mean(said):.2f}" if said else "-" for said in said_yes)
            print(f"    {tag}: accepted {np.mean([r['accepted'] for r in mine]):.2f}; "
                  f"Yes on accepted / rejected {rates}")  # fmt: skip


def renders(adapter: JanusAdapter, n: int, counts: list[int]) -> None:
    examples = [sample_example(derive_seed(77, i), TAGS[i % len(TAGS)]) for i in range(n)]
    for count in counts:
        rng = np.random.default_rng(count)
        images = [add_debris(e.render(), rng, count) if count else e.render() for e in examples]
        contexts = [adapter.caption_context(image) for image in images]
        texts = adapter.sample_text(contexts, 32, stop_ids=(adapter.spec.eos_id,),
                                    generator=torch.Generator().manual_seed(0)).texts  # fmt: skip
        right = [(c := parse_caption(t)) is not None and verify(i, c).correct for t, i in zip(texts, images)]
        named = [caption_objects(t) == scene_objects(e.scene) for t, e in zip(texts, examples)]
        print(f"renders with {count} fragments: caption accuracy {np.mean(right):.2f}, "
              f"naming the objects {np.mean(named):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Janus checkpoint directory (a describing self-check)")
    parser.add_argument("--per-category", type=int, default=20, help="own images per GenEval category")
    parser.add_argument("--guidance", type=float, default=3.0, help="CFG weight of the own images (the eval's)")
    parser.add_argument("--renders", type=int, default=120, help="renders captioned (0: skip part 2)")
    parser.add_argument("--debris", type=int, nargs="+", default=[0, 3, 6], help="fragments per render, 0 = clean")
    args = parser.parse_args()
    torch.manual_seed(0)
    adapter = describing_adapter(args.model)
    with torch.no_grad():
        own_images(adapter, args.per_category, args.guidance)
        if args.renders > 0:
            renders(adapter, args.renders, args.debris)


if __name__ == "__main__":
    main()
