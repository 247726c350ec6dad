"""The metric sink: metrics.jsonl, TensorBoard and W&B (offline) get the same names; resume drops later rows."""

from __future__ import annotations

import json
import time

import pytest

from coevolve.config.schema import LoggingConfig
from coevolve.utils.metrics_log import MetricsLog, check_wandb

ROWS = [
    {
        "step": 1,
        "stage": "coevolve",
        "introspective/reward/format/mean": 0.5,
        "learner/loss": 1.25,
        "timing/step_s": 3.0,
    },
    {"step": 2, "stage": "coevolve", "introspective/reward/format/mean": 0.75, "learner/loss": float("nan")},
]
NAMES = {"introspective/reward/format/mean", "learner/loss", "timing/step_s"}


def _tensorboard_tags(folder) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return set(events.Tags()["scalars"])


def test_metrics_jsonl_and_tensorboard_get_the_same_names_and_resume_drops_later_rows(tmp_path):
    log = MetricsLog(tmp_path, 0, LoggingConfig(tensorboard=True))
    for row in ROWS:
        log.write(row)
    log.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert _tensorboard_tags(tmp_path / "tb") == NAMES  # the string and the NaN are not scalars
    MetricsLog(tmp_path, 1, LoggingConfig(tensorboard=False)).close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]


def test_wandb_offline_logs_the_same_names(tmp_path, monkeypatch):
    try:
        import wandb  # noqa: F401
    except ImportError:
        pytest.skip("wandb is not installed (pip install 'coevolve[wandb]'): W&B logging is not tested")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run" / "rl"
    out.mkdir(parents=True)
    log = MetricsLog(out, 0, LoggingConfig(tensorboard=False, wandb=True, wandb_project="coevolve-test"), {"seed": 0})
    for row in ROWS:
        log.write(row)
    log.close()
    run_id = (out / "wandb" / "run_id").read_text().strip()
    (record,) = (out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    deadline = time.monotonic() + 30  # W&B's service may still be writing when finish() returns
    while b"timing/step_s" not in record.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = record.read_bytes()  # protobuf records: the metric names are stored as plain strings
    for name in NAMES:
        assert name.encode() in logged, name


def test_wandb_without_the_package_or_with_a_bad_mode_is_named(monkeypatch):
    with pytest.raises(ValueError, match="logging.wandb_mode must be one of"):
        LoggingConfig(wandb_mode="sometimes")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ValueError, match=r"logging.wandb=true needs the wandb package: pip install 'coevolve\[wandb\]'"
    ):
        check_wandb(LoggingConfig(wandb=True))
    check_wandb(LoggingConfig(wandb=False))
