"""The trace store: writer and reader, the schema, a writer killed mid-shard, queries, export, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from coevolve.cli.main import main
from coevolve.traces.record import TRACE_COLUMNS, trace_row
from coevolve.traces.store import SCHEMA_VERSION, TraceStore, TraceWriter, named_queries, trace_columns
from coevolve.traces.synthetic import SHAPES_PROGRAMS, synthetic_rows, synthetic_store
from coevolve.trajectory import Segment, Trajectory

SCRIPT = '<script>alert("x")</script> a red circle & a <b>blue</b> square'


@pytest.fixture
def store_dir(tmp_path):
    return synthetic_store(tmp_path / "traces", steps=3, rows_per_step=16)


def test_every_shard_has_the_schema_of_the_config_and_pandas_duckdb_and_arrow_agree(store_dir):
    store = TraceStore.open(store_dir)
    assert store.steps() == [1, 2, 3] and store.manifest["schema_version"] == SCHEMA_VERSION
    assert store.manifest["steps"]["2"] == {"rows": 16, "file": "step-000002.parquet"}
    columns = trace_columns(SHAPES_PROGRAMS)
    assert columns[: len(TRACE_COLUMNS)] == list(TRACE_COLUMNS) and store.columns == columns
    schemas = {str(pq.read_schema(path)) for path in store.shard_paths()}
    assert len(schemas) == 1  # one schema over all shards
    schema = pq.read_schema(store.shard_paths()[0])
    assert str(schema.field("trained_segments").type) == "list<element: string>"
    assert str(schema.field("reward/format/details").type) == "string"
    assert str(schema.field("advantage/regen_image").type) == "double" and str(schema.field("step").type) == "int64"
    frame = store.frame()
    assert list(frame.columns) == columns and len(frame) == 48
    assert list(frame["step"]) == [1] * 16 + [2] * 16 + [3] * 16
    duck = duckdb.sql(
        f"SELECT count(*), avg(\"reward/format\") FROM read_parquet('{store_dir}/step-*.parquet')"
    ).fetchall()[0]
    assert duck[0] == 48 and duck[1] == pytest.approx(frame["reward/format"].mean())
    details = json.loads(frame["reward/self_consistency/details"].dropna().iloc[0])
    assert set(details) == {"judge", "self"}


def test_columns_follow_the_programs_rounds_and_terms():
    programs = {"intro": {"rollout": {"program": "introspective_t2i", "max_rounds": 3},
                          "reward": {"terms": {"aligned": {"scorer": {"name": "shapes_verifier"}, "segments": ["image"]}}}}}  # fmt: skip
    columns = trace_columns(programs)
    extra = [c for c in columns if c not in TRACE_COLUMNS]
    assert extra == [
        "description", "regen_description", "regen_verdict", "reflection_2", "regen_image_2_path", "dropped",
        "trained_segments",
        "reward/aligned", "reward/aligned/normalized", "reward/aligned/details", "advantage/image",
        "seconds/plan", "seconds/image", "seconds/decode", "seconds/verdict", "seconds/regeneration",
    ]  # fmt: skip


def test_a_real_trajectory_round_trips_with_its_images_beside_the_store(tmp_path):
    image = Image.new("RGB", (8, 8), "red")
    trajectory = Trajectory(
        "p0/0", "p0", SCRIPT, "introspective_t2i",
        [Segment("plan", "text", text=" Plan: a red circle."), Segment("image", "image", image=image),
         Segment("verdict", "text", text=" No, the image does not match the prompt because <script>.")],
        info={"p_yes": 0.25, "rounds": 1, "seconds": {"plan": 0.5}}, policy_version=3,
    )  # fmt: skip
    programs = {"intro": {"rollout": {"program": "introspective_t2i", "max_rounds": 2}, "reward": {}}}
    writer = TraceWriter(tmp_path / "store", {"seed": 0}, programs=programs)
    writer.write_step(7, [trace_row(trajectory, writer.root, "run", 7)])
    store = TraceStore.open(tmp_path / "store")
    (row,) = store.table().to_pylist()
    assert row["prompt"] == SCRIPT and row["verdict"].endswith("<script>.")  # verbatim; a viewer escapes
    assert row["image_path"] == "images/p0_0.image.png" and (store.root / row["image_path"]).is_file()
    assert row["p_yes"] == 0.25 and row["policy_version"] == 3 and row["seconds/plan"] == 0.5
    assert store.manifest["run_config"] == {"seed": 0}


def test_a_caption_only_reconstruction_round_trips(tmp_path):
    """rollout.redraw=false: the caption and its source, no image column, no final image."""
    source = Image.new("RGB", (8, 8), "blue")
    trajectory = Trajectory(
        "p0/0", "p0", "a photo of a blue square", "reconstruction", [Segment("caption", "text", text="a blue square")],
        source_image=source, info={"seconds": {"caption": 0.25}},
    )  # fmt: skip
    programs = {"captions": {"rollout": {"program": "reconstruction", "redraw": False},
                             "reward": {"terms": {"rebuilt": {"segments": ["caption"]}}}}}  # fmt: skip
    assert [c for c in trace_columns(programs) if c.startswith("seconds/")] == ["seconds/caption"]
    writer = TraceWriter(tmp_path / "store", {"seed": 0}, programs=programs)
    writer.write_step(1, [trace_row(trajectory, writer.root, "run", 1)])
    (row,) = TraceStore.open(tmp_path / "store").table().to_pylist()
    assert row["caption"] == "a blue square" and row["image_path"] is None and row["final_image"] is None
    assert row["source_image_path"] == "images/p0_0.source.png" and row["seconds/caption"] == 0.25


def test_a_self_check_round_trips(tmp_path):
    """The self-check program: its judged image as the source, its description and verdict, P(yes)."""
    source = Image.new("RGB", (8, 8), "red")
    segments = [Segment("description", "text", text=" a red circle"),
                Segment("verdict", "text", text=" No, the image does not match the prompt because x.")]  # fmt: skip
    trajectory = Trajectory("p1/0", "p1", "a photo of a blue circle", "self_check", segments, source_image=source,
                            info={"p_yes": 0.25, "seconds": {"verdict": 0.5}})  # fmt: skip
    programs = {"self_check": {"rollout": {"program": "self_check"},
                               "reward": {"terms": {"agree": {"segments": ["verdict"]}}}}}  # fmt: skip
    columns = trace_columns(programs)
    assert {"source_image_path", "description", "verdict", "seconds/verdict"} <= set(columns)
    writer = TraceWriter(tmp_path / "store", {"seed": 0}, programs=programs)
    writer.write_step(1, [trace_row(trajectory, writer.root, "run", 1)])
    (row,) = TraceStore.open(tmp_path / "store").table().to_pylist()
    assert row["verdict"].startswith(" No") and row["description"] == " a red circle" and row["p_yes"] == 0.25
    assert row["source_image_path"] == "images/p1_0.source.png" and row["final_image"] is None
    assert row["image_path"] is None and row["seconds/verdict"] == 0.5


def test_rewriting_a_step_replaces_it_and_discard_after_drops_later_steps(store_dir):
    writer = TraceWriter(store_dir)  # reopened: the store keeps its columns
    writer.write_step(2, synthetic_rows(2, 4, seed=1))
    store = TraceStore.open(store_dir)
    assert store.steps() == [1, 2, 3] and len(store.frame([2])) == 4 and len(store.frame()) == 36
    writer.discard_after(1)
    store = TraceStore.open(store_dir)
    assert store.steps() == [1] and list(store.manifest["steps"]) == ["1"]


def test_rows_outside_the_schema_or_of_the_wrong_type_are_refused(store_dir):
    writer = TraceWriter(store_dir)
    with pytest.raises(ValueError, match=r"columns \['reward/novelty'\] are not in the store's schema"):
        writer.write_step(4, [{"id": "x", "reward/novelty": 1.0}])
    with pytest.raises(ValueError, match=r"column 'p_yes' holds a value of the wrong type"):
        writer.write_step(4, [{"id": "x", "p_yes": "high"}])
    other = {"intro": {"rollout": {"program": "reconstruction"}, "reward": {}}}
    with pytest.raises(ValueError, match="holds traces with other columns"):
        TraceWriter(store_dir, None, programs=other)
    assert TraceStore.open(store_dir).steps() == [1, 2, 3]


KILLED_WRITER = """
import os, sys
from coevolve.traces.store import TraceWriter
writer, n = TraceWriter(sys.argv[1], None), int(sys.argv[2])
step = 0
while True:
    step += 1
    text = os.urandom(400 * n).hex()
    rows = [{"step": step, "id": f"{step}-{i}", "prompt": text[800 * i : 800 * (i + 1)], "reward/a": float(i)}
            for i in range(n)]
    writer.write_step(step, rows)
    print("done", step, flush=True)
"""


def _half_written(root):
    for path in root.glob(".step-*.partial-*"):
        try:
            if path.stat().st_size > 0:
                return path
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return None


def test_a_writer_killed_mid_shard_leaves_every_completed_step_readable(tmp_path):
    root, n = tmp_path / "store", 20000
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(root), str(n)], stdout=subprocess.PIPE, text=True
    )
    partial = None
    try:
        while child.stdout.readline().split()[:2] != ["done", "1"]:
            pass
        deadline = time.monotonic() + 60
        while partial is None and time.monotonic() < deadline:  # a shard half on disk: kill the writer now
            partial = _half_written(root)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert partial is not None, "the writer was never caught writing a shard"
    store = TraceStore.open(root)
    steps = store.steps()
    assert steps == list(range(1, len(steps) + 1))
    # (Unless the shard was renamed in the microseconds between seeing it and the kill.)
    assert f"step-{len(steps) + (1 if partial.exists() else 0):06d}" in partial.name
    for step in steps:
        table = pq.read_table(store.shard_paths([step])[0])
        assert table.num_rows == n and table.column("step").to_pylist() == [step] * n
    assert len(store.frame()) == n * len(steps)
    assert json.loads((root / "manifest.json").read_text())["schema_version"] == SCHEMA_VERSION
    TraceWriter(root)  # the next writer clears what the killed one left half-written
    assert not partial.exists() and TraceStore.open(root).steps() == steps


def _row(i: int, verdict: str, first: float, final: float | None, judge: float, own: float | None) -> dict:
    return {
        "id": f"t{i}", "group": "g", "step": 1, "verdict": verdict, "regen_image_path": None if final is None else "r.png",
        "reward/image_alignment": first, "reward/final_alignment": first if final is None else final,
        "reward/self_consistency": 1.0, "reward/self_consistency/details": {"judge": judge, "self": own},
        "reward/format": float(i % 2),
    }  # fmt: skip


def test_named_queries_find_the_aha_cases_and_the_disagreements(tmp_path):
    programs = {"introspective": SHAPES_PROGRAMS["introspective"]}
    writer = TraceWriter(tmp_path / "store", None, programs=programs)
    no = " No, the image does not match the prompt because the circle is blue."
    writer.write_step(1, [
        _row(0, no, 0.0, 1.0, 0.0, 0.0),                          # aha: No, then better
        _row(1, no, 0.5, 0.5, 0.0, 0.0),                          # regenerated, not better
        _row(2, " Yes, the image matches the prompt.", 0.0, None, 0.0, 1.0),  # Yes on a wrong image: disagree
        _row(3, no, 1.0, 0.0, 1.0, 0.0),                          # No on a right image: disagree, worse
        _row(4, "garbled", 0.0, None, 0.0, None),                 # unparsed: no self to compare
    ])  # fmt: skip
    store = TraceStore.open(tmp_path / "store")
    assert set(named_queries) >= {"aha", "disagree", "dropped"}
    assert list(store.query(named=["aha"])["id"]) == ["t0"]
    assert list(store.query(named=["disagree"])["id"]) == ["t2", "t3"]
    assert list(store.query(below=["format=0.5"])["id"]) == ["t0", "t2", "t4"]
    assert list(store.query("\"reward/format\" < 0.5 AND verdict LIKE '%No%'", named=["disagree"])["id"]) == []
    with pytest.raises(ValueError, match=r"reward/nope.*not found"):
        store.query('"reward/nope" > 0')
    with pytest.raises(ValueError, match="unknown named query 'ahaa'"):
        store.query(named=["ahaa"])
    with pytest.raises(ValueError, match="no reward term 'formt'"):
        store.query(below=["formt=0.5"])


def test_export_writes_jsonl_parquet_and_csv(store_dir, tmp_path):
    for fmt in ("jsonl", "parquet", "csv"):
        out = tmp_path / f"out.{fmt}"
        assert main(["traces", "export", str(store_dir), "--format", fmt, "--out", str(out), "--step", "2"]) == 0
        if fmt == "jsonl":
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            assert isinstance(rows[0]["reward/format/details"], dict) and isinstance(rows[0]["trained_segments"], list)
        elif fmt == "parquet":
            rows = pd.read_parquet(out).to_dict("records")
        else:
            rows = pd.read_csv(out).to_dict("records")
        assert len(rows) == 16 and {row["step"] for row in rows} == {2}
    assert main(["traces", "export", str(store_dir), "--format", "jsonl", "--out", str(tmp_path / "aha.jsonl"),
                 "--named", "aha"]) == 0  # fmt: skip
    aha = [json.loads(line) for line in (tmp_path / "aha.jsonl").read_text().splitlines()]
    assert len(aha) == len(TraceStore.open(store_dir).query(named=["aha"])) > 0


def test_the_cli_lists_shows_and_queries_a_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    synthetic_store(run_dir / "rl" / "traces", steps=2, rows_per_step=8)
    assert main(["traces", "ls", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "2 steps, 16 rows" in out and "introspective/reward/image_alignment/mean" in out
    assert main(["traces", "show", str(run_dir), "--step", "2", "--group", "introspective-2-1"]) == 0
    out = capsys.readouterr().out
    assert out.count("── introspective-2-1/") == 4 and "prompt:" in out and "rewards:" in out and "advantages:" in out
    assert main(["traces", "query", str(run_dir), "--where", "step = 1", "--columns", "id,step"]) == 0
    assert "8 of 16 rows match" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ls", "{tmp}/nowhere"], "nowhere does not exist"),
        (["ls", "{tmp}"], "holds no trace store"),
        (["show", "{store}", "--step", "9"], "has no step 9 (steps: 1..3)"),
        (["show", "{store}", "--step", "1", "--group", "nope"], "has no group 'nope'"),
        (["query", "{store}", "--where", "step >"], "the condition '(step >)' is not one DuckDB can apply"),
        (["query", "{store}", "--named", "ahaa"], "unknown named query 'ahaa'"),
    ],
)
def test_the_cli_names_a_bad_path_step_group_or_condition(store_dir, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path / "empty", store=store_dir) for a in argv]
    (tmp_path / "empty").mkdir()
    assert main(["traces", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"coevolve traces {argv[0]}: error:") and message in err
