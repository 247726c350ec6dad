"""`coevolve pipeline`: its closing table, and a run killed in SFT and in RL that resumes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coevolve.pipeline import StageRecord, summary_table
from coevolve.traces.store import TraceStore

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def _figures(
    first: float, heldout: float, reconstruction: float, balanced: float | None = 0.5, auc: float | None = None
) -> dict:
    per_category = {tag: {"n": 20, "correct": 0, "accuracy": first if tag == "counting" else 0.0} for tag in TAGS}
    return {
        "image_accuracy": {"accuracy": first, "per_category": per_category},
        "final_image_accuracy": {"accuracy": 0.25},
        "verdict_accuracy_own": {"p_yes": {"accuracy": 0.5, "balanced_accuracy": balanced, "auc": auc}},
        "verdict_accuracy_heldout": {"p_yes": {"accuracy": heldout}},
        "caption_accuracy": {"accuracy": 0.0},
        "format_rate": {"rate": 1.0},
        "reconstruction": {"mean_similarity": reconstruction},
    }


def test_summary_table_lists_each_checkpoint_in_its_column():
    sft = {**_figures(0.125, 0.8, 0.2, auc=0.625), "caption_objects": {"accuracy": 0.25}, "caption_shapes": {"accuracy": 0.5}}
    # tiny: figures written before captions naming the objects were measured
    table = summary_table({"tiny": _figures(0.0, 0.5, 0.1, balanced=None), "sft": sft}).splitlines()
    assert table[0].split() == ["metric", "tiny", "sft"]
    rows = {line[:30].strip(): line[30:].split() for line in table[1:]}
    assert rows["image accuracy (first image)"] == ["0.0%", "12.5%"]
    assert rows["counting"] == ["0.0%", "12.5%"] and rows["colors"] == ["0.0%", "0.0%"]
    assert rows["held-out verdicts, P(yes)"] == ["50.0%", "80.0%"]
    assert rows["reconstruction"] == ["0.100", "0.200"]
    assert rows["own verdicts, P(yes), balanced"] == ["n/a", "50.0%"]  # tiny: no image accepted
    assert rows["captions naming the objects"] == ["n/a", "25.0%"]
    assert rows["captions naming the shapes"] == ["n/a", "50.0%"]
    assert rows["own verdicts, P(yes) AUC"] == ["n/a", "62.5%"]
    assert len(table) == 1 + 1 + len(TAGS) + 9 + 1


def _short_pipeline(run_dir: Path, tiny_checkpoint: Path, rl_overrides) -> list[str]:
    """`coevolve pipeline` at tiny sizes: two SFT phases (the recipe's shape), then the short RL run
    of the RL tests (3 steps) from the pipeline's own SFT checkpoint."""
    return [
        f"model.path={tiny_checkpoint}",
        "sft.phases=[{name: bind, max_steps: 2, tasks: {t2i: 1}}, {name: mix, max_steps: 3}]",
        "sft.save_steps=1",
        "sft.per_device_batch_size=4",
        "sft.warmup_steps=1",
        "data.num_examples=12",
        "logging.progress_bar=false",
        *rl_overrides(run_dir, run_dir / "checkpoints" / "sft"),
    ]


def _run_until(command: list[str], marker: Path, timeout: float = 900) -> None:
    """Start `command` and kill it and everything it started (SIGKILL) once `marker` exists."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while not marker.exists():
            assert process.poll() is None, f"the pipeline ended (exit {process.returncode}) before {marker} appeared"
            assert time.time() < deadline, f"no {marker} after {timeout} s"
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.slow
def test_a_killed_pipeline_resumes_the_stage_it_was_in(tmp_path, tiny_checkpoint, rl_overrides):
    run_dir = tmp_path / "run"
    overrides = _short_pipeline(run_dir, tiny_checkpoint, rl_overrides)
    command = [sys.executable, "-m", "coevolve.cli.main", "pipeline", *overrides]

    _run_until(command, run_dir / "sft" / "mix" / "checkpoint-1" / "trainer_state.json")  # killed in SFT
    assert not (run_dir / "checkpoints" / "sft").exists()
    bind_model = run_dir / "sft" / "bind" / "model" / "model.safetensors"
    bind_written = bind_model.stat().st_mtime_ns

    _run_until(command, run_dir / "rl" / "checkpoint-2" / "step.json")  # SFT resumed, killed in RL
    sft = json.loads((run_dir / "sft" / "summary.json").read_text())
    # Resumed where it was killed (SIGKILL lands within 0.2 s of checkpoint-1; a step takes less).
    assert sft["phases"][0]["reused"] and re.search(r"mix/checkpoint-[12]$", sft["phases"][1]["resumed_from"])
    assert bind_model.stat().st_mtime_ns == bind_written
    sft_model = run_dir / "checkpoints" / "sft" / "model.safetensors"
    sft_written = sft_model.stat().st_mtime_ns
    assert not (run_dir / "checkpoints" / "rl").exists()

    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[pipeline] sft: reusing" in done.stdout and sft_model.stat().st_mtime_ns == sft_written
    assert json.loads((run_dir / "rl" / "summary.json").read_text())["resumed_from"] == 2
    traces = TraceStore.open(run_dir)
    table = traces.table().to_pylist()
    assert traces.steps() == [1, 2, 3]
    assert len({row["id"] for row in table}) == len(table) == 3 * (2 * 2 + 1 * 2)  # no row twice
    assert "image accuracy (first image)" in done.stdout and (run_dir / "report.html").is_file()
    record = json.loads((run_dir / "pipeline.json").read_text())
    assert record["stages"]["sft"]["resumed"] is True and record["stages"]["rl"]["resumed"] is True
    assert "bootstrap" not in record["stages"]  # the given tiny checkpoint: nothing built, nothing timed
    assert set(record["eval"]) == {"tiny", "sft", "rl"}

    again = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("bootstrap", "demo", "sft", "rl"):
        assert f"[pipeline] {stage}: reusing" in again.stdout
    assert again.stdout.count("[pipeline] eval: reusing") == 3
    stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    assert {k: v for k, v in stages.items() if k != "report"} == {k: v for k, v in record["stages"].items() if k != "report"}


def test_stage_record_keeps_finished_stages_and_refuses_another_seed(tmp_path):
    path = tmp_path / "pipeline.json"
    record = StageRecord(path, seed=1)
    with record.timed("sft") as stage:
        stage["resumed"] = True
    with pytest.raises(RuntimeError), record.timed("rl"):
        raise RuntimeError("killed")  # a stage that did not finish is not recorded
    stages = json.loads(path.read_text())["stages"]
    assert list(stages) == ["sft"] and stages["sft"]["resumed"] is True and stages["sft"]["seconds"] >= 0

    again = StageRecord(path, seed=1)  # a re-run: sft reused, its time kept
    with again.timed("rl"):
        pass
    again.finish({"rl": {"image_accuracy": {"accuracy": 0.5}}})
    saved = json.loads(path.read_text())
    assert list(saved["stages"]) == ["sft", "rl"] and saved["eval"]["rl"]["image_accuracy"]["accuracy"] == 0.5
    with pytest.raises(ValueError, match=r"seed=1, this one has seed=2"):
        StageRecord(path, seed=2)
