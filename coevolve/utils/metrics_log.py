"""One sink for a stage's metric rows: metrics.jsonl, TensorBoard, Weights & Biases — the same names.

A row is `{"step": N, name: value, ...}`. Every row goes to `OUT/metrics.jsonl` whole; its finite
numbers go to TensorBoard (`OUT/tb/`, `logging.tensorboard`) and to W&B (`logging.wandb`; files
under `OUT/wandb/`, offline by default — `wandb sync OUT/wandb/offline-run-*` uploads them) under
the row's own names at the row's step. Opened at `start_step` > 0 (a resumed run), the rows after
it are dropped from metrics.jsonl and TensorBoard's later events are purged; W&B continues the run
whose id `OUT/wandb/run_id` keeps.
"""

from __future__ import annotations

import importlib.util
import json
import math
import uuid
from pathlib import Path

from coevolve.config.schema import LoggingConfig
from coevolve.utils.fs import atomic_write_text

WANDB_EXTRA = "pip install 'coevolve[wandb]'"


def check_wandb(logging: LoggingConfig) -> None:
    """Fail early (before any actor starts) when W&B is asked for but not installed."""
    if logging.wandb and importlib.util.find_spec("wandb") is None:
        raise ValueError(f"logging.wandb=true needs the wandb package: {WANDB_EXTRA}")


def scalars(row: dict) -> dict[str, float]:
    """The row's finite numbers other than its step: what TensorBoard and W&B receive."""
    return {
        key: value
        for key, value in row.items()
        if key != "step" and isinstance(value, (int, float)) and math.isfinite(value)
    }


class MetricsLog:
    """metrics.jsonl + TensorBoard + W&B for the rows of one stage written under `out`."""

    def __init__(self, out: Path, start_step: int, logging: LoggingConfig, run_config: dict | None = None):
        self.path = out / "metrics.jsonl"
        rows = []
        if self.path.is_file():
            rows = [line for line in self.path.read_text().splitlines() if line.strip()]
            rows = [line for line in rows if json.loads(line)["step"] <= start_step]
        atomic_write_text(self.path, "".join(line + "\n" for line in rows))
        self.tensorboard = self.wandb = None
        if logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(out / "tb"), purge_step=start_step + 1 if start_step else None)
        if logging.wandb:
            check_wandb(logging)
            import wandb

            folder = out / "wandb"
            folder.mkdir(parents=True, exist_ok=True)
            id_file = folder / "run_id"
            run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
            atomic_write_text(id_file, run_id + "\n")
            self.wandb = wandb.init(
                project=logging.wandb_project, dir=str(out), mode=logging.wandb_mode, id=run_id, resume="allow",
                name=out.parent.name, config=run_config,
            )  # fmt: skip

    def write(self, row: dict) -> None:
        with self.path.open("a") as stream:
            stream.write(json.dumps(row) + "\n")
        values = scalars(row)
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, row["step"])
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(values, step=row["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
