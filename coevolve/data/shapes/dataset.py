"""The shapes world as a Hugging Face ``datasets.Dataset``.

Each row is one seeded example (see ``prompts.sample_example``). ``metadata`` is stored as the
JSON text of GenEval's metadata dict, one line of an ``evaluation_metadata.jsonl``, so a
GenEval prompt file and this dataset go through the same evaluation path
(``verifier.verify`` accepts either).
"""

from __future__ import annotations

import json

import datasets
import numpy as np

from .metadata import TAGS
from .prompts import derive_seed, sample_example

FEATURES = datasets.Features({
    "prompt": datasets.Value("string"),
    "tag": datasets.Value("string"),
    "metadata": datasets.Value("string"),
    "plan": datasets.Value("string"),
    "caption": datasets.Value("string"),
    "image": datasets.Image(),
    "satisfies": datasets.Value("bool"),
    "violation": datasets.Value("string"),
    "seed": datasets.Value("int64"),
})


def shapes_dataset(num_examples: int, seed: int, tags: tuple[str, ...] = TAGS,
                   negative_fraction: float = 0.0) -> datasets.Dataset:
    """``num_examples`` rows of prompts, GenEval metadata, plans, captions and 64x64 renders.

    Row ``i`` has tag ``tags[i % len(tags)]`` and seed ``derive_seed(seed, i)``. Exactly
    ``round(num_examples * negative_fraction)`` rows, chosen by a permutation drawn from
    ``seed``, hold a violating scene (``satisfies`` False, ``violation`` says how); the rest
    satisfy their prompt (``violation`` is ""). The same arguments give identical rows.

    Columns: prompt, tag, metadata (JSON text), plan, caption, image (``datasets.Image``),
    satisfies, violation, seed. Built in memory (``from_dict``): no cache files.
    """
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    if not 0.0 <= negative_fraction <= 1.0:
        raise ValueError(f"negative_fraction must be in [0, 1], got {negative_fraction}")
    tags = (tags,) if isinstance(tags, str) else tuple(tags)
    if not tags:
        raise ValueError("tags must name at least one tag")
    for tag in tags:
        if tag not in TAGS:
            raise ValueError(f"unknown tag {tag!r} in tags; expected one of {', '.join(TAGS)}")

    num_negative = round(num_examples * negative_fraction)
    negative = np.zeros(num_examples, dtype=bool)
    negative[np.random.default_rng(seed).permutation(num_examples)[:num_negative]] = True

    rows: dict[str, list] = {name: [] for name in FEATURES}
    for i in range(num_examples):
        example = sample_example(derive_seed(seed, i), tags[i % len(tags)],
                                 satisfies=not negative[i])
        rows["prompt"].append(example.prompt)
        rows["tag"].append(example.tag)
        rows["metadata"].append(json.dumps(example.metadata))
        rows["plan"].append(example.plan)
        rows["caption"].append(example.caption)
        rows["image"].append(example.render())
        rows["satisfies"].append(example.satisfies)
        rows["violation"].append(example.violation or "")
        rows["seed"].append(example.seed)
    return datasets.Dataset.from_dict(rows, features=FEATURES)
