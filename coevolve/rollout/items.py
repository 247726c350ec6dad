"""The prompt sets `coevolve rollout` samples: seeded shapes prompts/renders, or a file.

- `shapes`: example i is `sample_example(derive_seed(seed, i), TAGS[i % 6])` (the GenEval
  categories interleaved); T2I items carry its prompt and `metadata["geneval"]`, reconstruction
  items also its render (the source image) and `metadata["caption"]`, the world's own caption.
  Self-check items come in pairs: items 2j and 2j + 1 share the prompt of
  `sample_example(derive_seed(seed, j), TAGS[j % 6])`, the first with its satisfying render, the
  second with the violating one (`metadata["satisfies"]`), so any even count is balanced.
- a `.txt` file (introspective_t2i): one prompt per line.
- any other path: a data source in the record schema (`coevolve/data/records.py`: prompt + image),
  read and decoded by `load_records`, so an unreadable image fails with file, row and field named.
- `program:NAME` (`coevolve rl` only, self_check): the first images another program of the same
  RL step drew, each with its prompt and metadata (`drawn_image_items`), so the self-check is
  trained on what the policy draws now rather than on renders.

Item ids are `p0000`, `p0001`, ... in order. Empty prompts are refused here with the line named;
prompts too long for the model are refused by the program's `check` (it knows the budgets).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from coevolve.data.records import load_records
from coevolve.data.shapes import TAGS, derive_seed, sample_example
from coevolve.rollout.programs import RolloutItem
from coevolve.trajectory import IMAGE, Trajectory
from rewards.shapes_verifier import GENEVAL

PROGRAM_SOURCE = "program:"
"""`rollout.source` prefix naming the RL program whose first images a self_check program judges."""


def drawn_program(source: str) -> str | None:
    """The program a `program:NAME` source names, else None."""
    return source[len(PROGRAM_SOURCE) :] if source.startswith(PROGRAM_SOURCE) else None


def drawn_image_items(trajectories: Sequence[Trajectory], num: int) -> list[RolloutItem]:
    """The first `num` of `trajectories`' first images (segment `image`) as self-check items: the
    trajectory's prompt and metadata, the image to judge; ids are the trajectories', and so is the
    group (the images of one prompt judged side by side)."""
    drawn = [t for t in trajectories if t.has(IMAGE)]
    if len(drawn) < num:
        raise ValueError(
            f"{len(trajectories)} trajectories hold {len(drawn)} first images, fewer than the {num} asked for"
        )
    return [RolloutItem(t.id, t.prompt, dict(t.metadata), t.image(IMAGE), group=t.group) for t in drawn[:num]]


def placeholder_image_items(items: Sequence[RolloutItem]) -> list[RolloutItem]:
    """`items` with a blank image each: what a `program:NAME` stream's items look like before the
    program has drawn anything, for the checks that run before the first rollout (prompt room)."""
    blank = Image.new("RGB", (64, 64), (128, 128, 128))  # any size: the processor resizes it
    return [RolloutItem(item.id, item.prompt, dict(item.metadata), blank) for item in items]


def _id(index: int) -> str:
    return f"p{index:04d}"


def shapes_items(program: str, num: int, seed: int, start: int = 0) -> list[RolloutItem]:
    """Examples start .. start + num - 1 of the seeded shapes stream."""
    items = []
    for i in range(start, start + num):
        if program == "self_check":
            # Pairs: one prompt, its satisfying render (even i) and its violating one (odd i), so
            # only what the render shows tells the two apart.
            pair = i // 2
            example = sample_example(derive_seed(seed, pair), TAGS[pair % len(TAGS)], satisfies=i % 2 == 0)
        else:
            example = sample_example(derive_seed(seed, i), TAGS[i % len(TAGS)])
        metadata = {GENEVAL: example.metadata, "tag": example.tag}
        if program == "self_check":
            metadata["satisfies"] = example.satisfies
            items.append(RolloutItem(_id(i), example.prompt, metadata, example.render()))
        elif program == "reconstruction":
            metadata["caption"] = example.caption
            items.append(RolloutItem(_id(i), example.prompt, metadata, example.render()))
        else:
            items.append(RolloutItem(_id(i), example.prompt, metadata))
    return items


def load_items(source: str, program: str, num: int, seed: int) -> list[RolloutItem]:
    """`num` items of `source` ("shapes" or a path) for `program`; see the module docstring."""
    if source == "shapes":
        return shapes_items(program, num, seed)
    if drawn_program(source) is not None:
        raise ValueError(
            f"rollout.source={source}: the images another program draws in the same step exist only in "
            "coevolve rl (rl.programs.NAME.rollout.source)"
        )
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"rollout.source: {path} does not exist")
    if path.suffix == ".txt":
        if program in ("reconstruction", "self_check"):
            raise ValueError(f"rollout.source={source}: the {program} program needs images, not a prompt list")
        lines = path.read_text().splitlines()[:num]
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                raise ValueError(f"rollout.source: {path} line {number} is an empty prompt")
        return [RolloutItem(_id(i), line.strip()) for i, line in enumerate(lines)]
    records = load_records(path, required=(), limit=num)
    return [
        RolloutItem(_id(i), record.prompt, {"tag": record.tag, "caption": record.caption}, record.image)
        for i, record in enumerate(records)
    ]
