"""Synthetic trace stores for benchmarks and tests: rows shaped like a `coevolve rl recipe=shapes` run's.

`synthetic_store(root, steps, rows_per_step)` writes a store through `TraceWriter` whose programs
mirror recipes/shapes.yaml (the introspective program with image, final-image, self-consistency
and format terms; the reconstruction program). Rewards, verdicts and regenerations are seeded
random draws; the images are a few shared PNGs, so large stores are cheap to build.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from coevolve.traces.record import IMAGE_DIR
from coevolve.traces.store import TraceWriter

SHAPES_PROGRAMS = {
    "introspective": {
        "rollout": {"program": "introspective_t2i", "max_rounds": 2, "num_generations": 4},
        "reward": {
            "terms": {
                "image_alignment": {
                    "scorer": {"name": "shapes_verifier", "graded": True},
                    "segments": ["plan", "image"],
                },
                "final_alignment": {
                    "scorer": {"name": "shapes_verifier", "graded": True, "segment": "final"},
                    "segments": ["reflection", "regen_image"],
                },
                "self_consistency": {
                    "scorer": {
                        "name": "self_consistency",
                        "self_source": "verdict",
                        "judge": {"name": "shapes_verifier"},
                    },
                    "segments": ["verdict"],
                },
                "format": {"scorer": {"name": "introspective_format"}, "segments": ["plan", "verdict", "reflection"]},
            }
        },
    },
    "reconstruction": {
        "rollout": {"program": "reconstruction", "num_generations": 4},
        "reward": {
            "terms": {"reconstruction": {"scorer": {"name": "reconstruction"}, "segments": ["caption", "image"]}}
        },
    },
}
COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
GROUP = 4  # trajectories per prompt


def _images(root: Path) -> list[str]:
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    paths = []
    for colour in COLOURS:
        relative = f"{IMAGE_DIR}/synthetic-{colour}.png"
        if not (root / relative).is_file():
            Image.new("RGB", (64, 64), colour).save(root / relative)
        paths.append(relative)
    return paths


def _introspective(step: int, index: int, k: int, rng: random.Random, images: list[str]) -> dict:
    colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
    first = rng.choice((0.0, 0.5, 1.0))
    said_yes = rng.random() < 0.5
    final = rng.choice((0.0, 0.5, 1.0)) if not said_yes else first
    judge = float(first == 1.0)
    row = {
        "plan": f" Plan: a {colour} {shape} in the centre.",
        "image_path": rng.choice(images),
        "verdict": " Yes, the image matches the prompt."
        if said_yes
        else f" No, the image does not match the prompt because the {shape} is not {colour}.",
        "p_yes": rng.random(),
        "final_image": "image" if said_yes else "regen_image",
        "rounds": 1 if said_yes else 2,
        "reward/image_alignment": first,
        "reward/final_alignment": final,
        "reward/self_consistency": 1.0 - abs(judge - float(said_yes)),
        "reward/self_consistency/details": {"judge": judge, "self": float(said_yes)},
        "reward/format": float(rng.random() < 0.9),
        "reward/format/details": {"in_format": {"plan": True, "verdict": True}},
        "reward/image_alignment/details": {"correct": first == 1.0, "clauses_met": first, "reasons": []},
    }
    if not said_yes:
        row["reflection"] = (
            f" Reflection: the image is wrong because the {shape} is not {colour}. Draw the image again, correcting the mistake."
        )
        row["regen_image_path"] = rng.choice(images)
    for term in ("image_alignment", "final_alignment", "self_consistency", "format"):
        row[f"reward/{term}/normalized"] = rng.gauss(0.0, 1.0)
    for segment in ("plan", "image", "verdict") + (() if said_yes else ("reflection", "regen_image")):
        row[f"advantage/{segment}"] = rng.gauss(0.0, 1.0)
    row["trained_segments"] = sorted(s[len("advantage/") :] for s in row if s.startswith("advantage/"))
    for phase in ("plan", "image", "decode", "verdict", "regeneration"):
        row[f"seconds/{phase}"] = rng.random() / 10
    return {"prompt": f"a {colour} {shape}", "program": "introspective_t2i", "group": f"introspective-{step}-{index}",
            "id": f"introspective-{step}-{index}/{k}", **row}  # fmt: skip


def _reconstruction(step: int, index: int, k: int, rng: random.Random, images: list[str]) -> dict:
    colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
    row = {
        "id": f"reconstruction-{step}-{index}/{k}", "group": f"reconstruction-{step}-{index}",
        "program": "reconstruction", "prompt": "", "caption": f" A {colour} {shape}.",
        "image_path": rng.choice(images), "source_image_path": rng.choice(images),
        "reward/reconstruction": rng.random(), "reward/reconstruction/normalized": rng.gauss(0.0, 1.0),
        "advantage/caption": rng.gauss(0.0, 1.0), "advantage/image": rng.gauss(0.0, 1.0),
        "trained_segments": ["caption", "image"],
    }  # fmt: skip
    for phase in ("caption", "image", "decode"):
        row[f"seconds/{phase}"] = rng.random() / 10
    return row


def synthetic_rows(step: int, n: int, seed: int = 0, images: list[str] | None = None) -> list[dict]:
    """`n` rows of `step`: groups of `GROUP`, three introspective groups for each reconstruction one."""
    rng = random.Random(seed * 1_000_003 + step)
    images = images or [f"{IMAGE_DIR}/synthetic-{c}.png" for c in COLOURS]
    rows = []
    for position in range(n):
        index, k = divmod(position, GROUP)
        make = _reconstruction if index % 4 == 3 else _introspective
        row = make(step, index, k, rng, images)
        row.update(run="synthetic", step=step, policy_version=step - 1, dropped=False)
        rows.append(row)
    return rows


def synthetic_store(root: str | Path, steps: int = 10, rows_per_step: int = 1000, seed: int = 0) -> Path:
    """A store of `steps` steps (1..steps) of `rows_per_step` rows each at `root`; returns `root`."""
    root = Path(root)
    writer = TraceWriter(root, {"synthetic": True, "seed": seed}, programs=SHAPES_PROGRAMS)
    images = _images(root)
    for step in range(1, steps + 1):
        writer.write_step(step, synthetic_rows(step, rows_per_step, seed, images))
    return root
