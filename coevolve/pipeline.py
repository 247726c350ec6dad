"""`coevolve pipeline`: the main job on the built-in shapes world.

`coevolve pipeline [recipe=shapes] [key=value ...]`: one config for every stage. Stages, each in
its own directory under the run directory and skipped when its output is complete: bootstrap the
tiny checkpoint at `model.path` -> demo (generate and verify) -> SFT (resumed when interrupted:
the phase it was in, from its last complete checkpoint) -> RL (resumed from its last
checkpoint; the trace shards past it are replaced) -> evaluation of the bootstrap,
SFT and RL checkpoints side by side (each reused when its eval.json exists) -> the trace report of
the RL run (RUN_DIR/report.html). Ends with a table of the three checkpoints' headline figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from coevolve.bootstrap.tiny import MANIFEST, build_tiny_checkpoint
from coevolve.config.schema import Config
from coevolve.demo import run_demo


def run_pipeline(config: Config) -> None:
    """Every stage on `config` (`coevolve pipeline [recipe=shapes] [overrides]`), skipping those
    whose output is complete."""
    run_dir, seed = Path(config.run_dir), config.seed
    checkpoint = Path(config.model.path)
    if (checkpoint / MANIFEST).is_file():
        print(f"[pipeline] bootstrap: reusing {checkpoint}")
    elif (checkpoint / "config.json").is_file():
        print(f"[pipeline] bootstrap: starting from the checkpoint {checkpoint}")
    else:
        print(f"[pipeline] bootstrap: building the tiny checkpoint in {checkpoint}")
        manifest = build_tiny_checkpoint(checkpoint, seed=seed, overwrite=False)
        print(f"[pipeline] bootstrap: done in {manifest['seconds']} s")
    if (run_dir / "demo" / "summary.json").is_file():
        print(f"[pipeline] demo: reusing {run_dir / 'demo'}")
    else:
        print("[pipeline] demo")
        run_demo(str(checkpoint), run_dir / "demo", seed=seed)

    sft_checkpoint = run_dir / "checkpoints" / "sft"
    if (sft_checkpoint / "config.json").is_file():
        print(f"[pipeline] sft: reusing {sft_checkpoint}")
    else:
        from coevolve.sft.run import run_sft

        print("[pipeline] sft")
        print(json.dumps(run_sft(config, run_dir), indent=2))

    stage = config.rl.stages[-1].name
    rl_checkpoint = run_dir / "checkpoints" / "rl" / stage
    if (rl_checkpoint / "config.json").is_file():
        print(f"[pipeline] rl: reusing {rl_checkpoint}")
    else:
        from coevolve.rl.run import run_rl

        print("[pipeline] rl")
        summary = run_rl(config, run_dir)
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
            figures = evaluate_shapes(
                JanusAdapter.from_pretrained(path),
                config.eval,
                unconditional=config.model.unconditional,
                out_dir=out,
                overwrite=True,
            )
        report[name] = figures

    from coevolve.traces.report import write_report

    html = write_report(run_dir, run_dir / "report.html")
    print(summary_table(report))
    print(f"[pipeline] trace report: {html}")


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
        ("held-out verdicts, P(yes)", lambda f: f["verdict_accuracy_heldout"]["p_yes"]["accuracy"]),
        ("caption accuracy", lambda f: f["caption_accuracy"]["accuracy"]),
        ("format rate", lambda f: f["format_rate"]["rate"]),
    ]
    names = list(report)
    width = max(len(label) for label, _ in rows) + 2
    lines = ["metric".ljust(width) + "".join(f"{name:>9}" for name in names)]
    for label, get in rows:
        lines.append(label.ljust(width) + "".join(f"{100 * get(report[name]):8.1f}%" for name in names))
    lines.append(
        "reconstruction".ljust(width)
        + "".join(f"{report[name]['reconstruction']['mean_similarity']:9.3f}" for name in names)
    )
    return "\n".join(lines)
