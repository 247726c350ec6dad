"""The `eval` config group (conf/eval/): which suite `coevolve eval` runs, and its keys.

Suites, each an option of the group (`eval=NAME`, or its short form `suite=NAME`):

- `shapes` (conf/eval/shapes.yaml, the default): `evaluate_shapes` on the built-in shapes world;
- `geneval` (conf/eval/geneval.yaml): images for a GenEval prompt metadata file, written in
  GenEval's folder layout (coevolve/eval/geneval.py);
- `dpg` (conf/eval/dpg.yaml): 2x2 grids for DPG-Bench's prompt files (coevolve/eval/dpg.py).

`EvalConfig` is `ShapesEvalConfig` (whose keys the shapes suite and RL's in-training eval read)
plus the suite's name and the suite's own keys. The sampling keys `seed`, `guidance_weight`,
`temperature`, `top_k`, `top_p` and `batch_size` are every suite's. A suite's own group
(`eval.geneval`, `eval.dpg`) exists only when that suite is chosen, so a key of another suite is
an error, not a silent no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING

from coevolve.eval.shapes import ShapesEvalConfig

SUITES = ("shapes", "geneval", "dpg")


def _check_limit(where: str, limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{where}.limit must be an int >= 1 or null (all), got {limit!r}")


@dataclass
class GenEvalSuite:
    # A GenEval prompt metadata file: GenEval's prompts/evaluation_metadata.jsonl, or the shapes
    # world's (`coevolve geneval prompts`); one JSON object per line with at least "tag" and "prompt".
    metadata_file: str = MISSING
    # Where the images go, in GenEval's layout (null: RUN_DIR/eval/geneval/<checkpoint name>).
    out_dir: str | None = None
    # Images per prompt (GenEval's protocol: 4).
    images_per_prompt: int = 4
    # Only the first this many prompts (null: all); a prompt keeps its line's index as its folder name.
    limit: int | None = None
    # Replace a non-empty out_dir (otherwise it is refused, before any work).
    overwrite: bool = False

    def __post_init__(self) -> None:
        images = self.images_per_prompt
        if isinstance(images, bool) or not isinstance(images, int) or images < 1:
            raise ValueError(f"eval.geneval.images_per_prompt must be an int >= 1, got {images!r}")
        _check_limit("eval.geneval", self.limit)


@dataclass
class DPGSuite:
    # DPG-Bench's prompt folder (ELLA's dpg_bench/prompts/): one <item_id>.txt per prompt.
    prompts_dir: str = MISSING
    # Where the <item_id>.png grids go (null: RUN_DIR/eval/dpg/<checkpoint name>).
    out_dir: str | None = None
    # Only the first this many prompt files, in sorted order (null: all).
    limit: int | None = None
    # Replace a non-empty out_dir (otherwise it is refused, before any work).
    overwrite: bool = False

    def __post_init__(self) -> None:
        _check_limit("eval.dpg", self.limit)


@dataclass  # not frozen: Hydra merges command-line values into it
class EvalConfig(ShapesEvalConfig):
    # Which suite `coevolve eval` runs: shapes, geneval or dpg (set by the group option, `suite=NAME`).
    suite: str = "shapes"
    # Where `coevolve eval` loads the model: "auto" (cuda when there is one, else cpu), "cpu", "cuda", "cuda:N".
    device: str = "auto"
    geneval: GenEvalSuite | None = None  # the geneval suite's keys (conf/eval/geneval.yaml)
    dpg: DPGSuite | None = None  # the dpg suite's keys (conf/eval/dpg.yaml)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.suite not in SUITES:
            raise ValueError(f"eval.suite must be one of {SUITES}, got {self.suite!r}")
        for name in SUITES[1:]:
            present = getattr(self, name) is not None
            if name == self.suite and not present:
                raise ValueError(f"eval.suite={name} needs eval.{name}: choose the suite with `suite={name}`")
            if name != self.suite and present:
                raise ValueError(f"eval.{name} is set but eval.suite is {self.suite!r}: nothing would read it")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as error:
                raise ValueError(f"eval.device must be 'auto' or a torch device, got {self.device!r}") from error

    @property
    def torch_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device
