"""`coevolve pipeline`: the main job on the built-in shapes world.

`coevolve pipeline [recipe=shapes] [key=value ...]`: one config for every stage. Stages, each in
its own directory under the run directory and skipped when its output is complete: bootstrap the
tiny checkpoint at `model.path` -> demo (generate and verify) -> SFT (resumed when interrupted:
the phase it was in, from its last complete checkpoint) -> RL (resumed from its last
checkpoint; the trace shards past it are replaced) -> evaluation of the bootstrap,
SFT and RL checkpoints side by side (each reused when its eval.json exists) -> the trace report of
the RL run (RUN_DIR/report.html). Ends with a table of the three checkpoints' headline figures.

RUN_DIR/pipeline.json records each stage's wall time (kept from an earlier run for a stage that is
reused; `resumed` when the stage continued an interrupted run, whose seconds then count this run's
part only) and the three checkpoints' eval figures; `python -m coevolve.eval.seeds_table` tabulates
it over seeds (the README's results table).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from coevolve.bootstrap.tiny import MANIFEST, build_tiny_checkpoint
from coevolve.config.schema import Config
from coevolve.demo import run_demo
from coevolve.utils.fs import atomic_write_text


def run_pipeline(config: Config) -> None:
    """Every stage on `config` (`coevolve pipeline [recipe=shapes] [overrides]`), skipping those
    whose output is complete."""
    run_dir, seed = Path(config.run_dir), config.seed
    record = StageRecord(run_dir / RECORD, seed)
    checkpoint = Path(config.model.path)
    if (checkpoint / MANIFEST).is_file():
        print(f"[pipeline] bootstrap: reusing {checkpoint}")
    elif (checkpoint / "config.json").is_file():
        print(f"[pipeline] bootstrap: starting from the checkpoint {checkpoint}")
    else:
        print(f"[pipeline] bootstrap: building the tiny checkpoint in {checkpoint}")
        with record.timed("bootstrap"):
            manifest = build_tiny_checkpoint(checkpoint, seed=seed, overwrite=False)
        print(f"[pipeline] bootstrap: done in {manifest['seconds']} s")
    if (run_dir / "demo" / "summary.json").is_file():
        print(f"[pipeline] demo: reusing {run_dir / 'demo'}")
    else:
        print("[pipeline] demo")
        with record.timed("demo"):
            run_demo(str(checkpoint), run_dir / "demo", seed=seed)

    sft_checkpoint = run_dir / "checkpoints" / "sft"
    if (sft_checkpoint / "config.json").is_file():
        print(f"[pipeline] sft: reusing {sft_checkpoint}")
    else:
        from coevolve.sft.run import run_sft

        print("[pipeline] sft")
        with record.timed("sft") as stage:
            summary = run_sft(config, run_dir)
            stage["resumed"] = summary["resumed_from"] is not None or any(
                phase.get("reused") for phase in summary.get("phases", [])
            )
        print(json.dumps(summary, indent=2))

    stage = config.rl.stages[-1].name
    rl_checkpoint = run_dir / "checkpoints" / "rl" / stage
    if (rl_checkpoint / "config.json").is_file():
        print(f"[pipeline] rl: reusing {rl_checkpoint}")
    else:
        from coevolve.rl.run import run_rl

        print("[pipeline] rl")
        with record.timed("rl") as stage:
            summary = run_rl(config, run_dir)
            stage["resumed"] = summary["resumed_from"] is not None
        print(json.dumps({key: summary[key] for key in ("resumed_from", "steps", "seconds")}, indent=2))

    from coevolve.eval.shapes import evaluate_shapes
    from coevolve.model import JanusAdapter

    report = {}
    for name, path in (("tiny", checkpoint), ("sft", sft_checkpoint), ("rl", rl_checkpoint)):
        out = run_dir / "eval" / name
        if (out / "eval.json").is_file():  # written last, atomically: present means complete
            print(f"[pipeline] eval: reusing {out}")
            figures = json.loads((out / "eval.json").read_text())
        else:
            print(f"[pipeline] eval: {path}")
            with record.timed(f"eval_{name}"):
                figures = evaluate_shapes(
                    JanusAdapter.from_pretrained(path),
                    config.eval,
                    unconditional=config.model.unconditional,
                    out_dir=out,
                    overwrite=True,
                )
        report[name] = figures

    from coevolve.traces.report import write_report

    with record.timed("report"):
        html = write_report(run_dir, run_dir / "report.html")
    record.finish(report)
    print(summary_table(report))
    print(f"[pipeline] trace report: {html}")


RECORD = "pipeline.json"


class StageRecord:
    """RUN_DIR/pipeline.json: `{"seed", "stages": {name: {"seconds", "resumed"?}}, "eval": {checkpoint:
    figures}}`, rewritten atomically after each stage so a killed run keeps the stages it finished."""

    def __init__(self, path: Path, seed: int):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {"stages": {}}
        if self.data.get("seed", seed) != seed:
            raise ValueError(f"{path} was written by a pipeline with seed={self.data['seed']}, this one has seed={seed}")
        self.data["seed"] = seed

    @contextmanager
    def timed(self, stage: str):
        """Times the body and records it under `stage` once it completes; yields the stage's entry
        for extra fields."""
        entry: dict = {}
        started = time.perf_counter()
        yield entry
        self.data["stages"][stage] = {"seconds": round(time.perf_counter() - started, 1), **entry}
        self._write()

    def finish(self, figures: dict[str, dict]) -> None:
        self.data["eval"] = figures
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")


def summary_table(report: dict[str, dict]) -> str:
    """The headline eval figures of each checkpoint side by side (percent; reconstruction as is)."""
    rows = [("image accuracy (first image)", lambda f: f["image_accuracy"]["accuracy"])]
    rows += [
        (f"  {tag}", lambda f, tag=tag: f["image_accuracy"]["per_category"][tag]["accuracy"])
        for tag in next(iter(report.values()))["image_accuracy"]["per_category"]
    ]
    rows += [
        ("image accuracy (final image)", lambda f: f["final_image_accuracy"]["accuracy"]),
        ("own verdicts, P(yes)", lambda f: f["verdict_accuracy_own"]["p_yes"]["accuracy"]),
        ("own verdicts, P(yes), balanced", lambda f: f["verdict_accuracy_own"]["p_yes"]["balanced_accuracy"]),
        # .get: records written before the AUC existed show n/a
        ("own verdicts, P(yes) AUC", lambda f: f["verdict_accuracy_own"]["p_yes"].get("auc")),
        ("held-out verdicts, P(yes)", lambda f: f["verdict_accuracy_heldout"]["p_yes"]["accuracy"]),
        ("caption accuracy", lambda f: f["caption_accuracy"]["accuracy"]),
        # .get: records written before these figures existed show n/a
        ("captions naming the objects", lambda f: f.get("caption_objects", {}).get("accuracy")),
        ("captions naming the shapes", lambda f: f.get("caption_shapes", {}).get("accuracy")),
        ("format rate", lambda f: f["format_rate"]["rate"]),
    ]
    names = list(report)
    width = max(len(label) for label, _ in rows) + 2
    lines = ["metric".ljust(width) + "".join(f"{name:>9}" for name in names)]
    for label, get in rows:
        # None: undefined, e.g. a balanced accuracy when the verifier accepted none of the images.
        values = [get(report[name]) for name in names]
        lines.append(label.ljust(width) + "".join("      n/a" if v is None else f"{100 * v:8.1f}%" for v in values))
    lines.append(
        "reconstruction".ljust(width)
        + "".join(f"{report[name]['reconstruction']['mean_similarity']:9.3f}" for name in names)
    )
    return "\n".join(lines)
