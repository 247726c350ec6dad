"""A short `coevolve rl recipe=shapes` read back from its trace store by `datasets`, pandas and DuckDB:
the same rows, and the per-step reward means the run logged in metrics.jsonl."""

from __future__ import annotations

import json

import datasets
import duckdb
import pandas as pd
import pytest

from coevolve.traces.store import TraceStore

TERMS = {  # term -> the program (config name) whose metrics hold its mean
    "image_alignment": "introspective",
    "final_alignment": "introspective",
    "self_consistency": "introspective",
    "format": "introspective",
    "reconstruction": "reconstruction",
}
ROWS_PER_STEP = 2 * 2 + 1 * 2  # introspective 2 prompts x 2, reconstruction 1 x 2 (short_rl_overrides)


@pytest.mark.slow
def test_datasets_pandas_and_duckdb_read_the_runs_rows_and_rewards(short_rl_run, tmp_path):
    run_dir, _ = short_rl_run
    store = TraceStore.open(run_dir)
    metrics = {row["step"]: row for row in map(json.loads, (run_dir / "rl" / "metrics.jsonl").read_text().splitlines())}
    assert store.steps() == sorted(metrics) == [1, 2, 3]
    shards = str(store.root / "step-*.parquet")

    by_datasets = datasets.load_dataset("parquet", data_files=shards, split="train", cache_dir=str(tmp_path / "hf"))
    by_datasets = by_datasets.to_pandas()
    by_pandas = pd.concat([pd.read_parquet(path) for path in store.shard_paths()], ignore_index=True)
    by_duckdb = duckdb.sql(f"SELECT * FROM read_parquet('{shards}')").df()
    for frame in (by_datasets, by_pandas, by_duckdb, store.frame()):
        assert len(frame) == 3 * ROWS_PER_STEP
        assert list(frame.columns) == store.columns
        for step, row in metrics.items():
            rows = frame[frame["step"] == step]
            assert len(rows) == ROWS_PER_STEP and set(rows["policy_version"]) == {step - 1}
            for term, program in TERMS.items():
                # metrics.jsonl: the mean raw score over the step's kept (scored) trajectories
                assert rows[f"reward/{term}"].mean() == pytest.approx(row[f"{program}/reward/{term}/mean"]), (
                    step,
                    term,
                )
    means = duckdb.sql(
        f"""SELECT step, avg("reward/format") AS format FROM read_parquet('{shards}') GROUP BY step ORDER BY step"""
    ).fetchall()
    assert [(step, pytest.approx(metrics[step]["introspective/reward/format/mean"])) for step in (1, 2, 3)] == means
    frame = store.frame()
    for column in ("image_path", "regen_image_path", "source_image_path"):
        for path in frame[column].dropna():
            assert (store.root / path).is_file(), path
