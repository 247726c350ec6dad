"""`coevolve rollout`: one real run writing traces, and bad input refused before anything is written."""

from __future__ import annotations

import json
import time

import pytest
import torch
from PIL import Image

from coevolve.cli.main import main
from coevolve.rollout.cluster import probe
from coevolve.traces.store import TraceStore

SMALL = ["rollout.num_prompts=3", "rollout.num_generations=2", "rollout.num_workers=1", "rollout.unit_size=2"]


@pytest.mark.slow
def test_rollout_writes_trajectories_traces_and_pngs(tmp_path, sft_checkpoint, capsys):
    run_dir = tmp_path / "run"
    code = main(["rollout", f"run_dir={run_dir}", f"checkpoint={sft_checkpoint}", "rollout=reconstruction",
                 "reward=reconstruction", *SMALL])  # fmt: skip
    assert code == 0
    out = run_dir / "rollout" / sft_checkpoint.name
    summary = json.loads((out / "summary.json").read_text())
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{\n") :]) == summary
    assert summary["counts"]["trajectories"] == 6 and 0 <= summary["rewards"]["reconstruction"] <= 1
    store = TraceStore.open(out)
    assert store.root == out / "traces" and store.steps() == [0]
    rows = store.table().to_pylist()
    assert [row["id"] for row in rows] == [f"p{i:04d}/{k}" for i in range(3) for k in range(2)]
    for row in rows:
        assert row["program"] == "reconstruction" and row["policy_version"] == 0 and isinstance(row["caption"], str)
        assert 0 <= row["reward/reconstruction"] <= 1 and row["advantage/caption"] is not None
        assert row["dropped"] is False
        for key in ("image_path", "source_image_path"):
            with Image.open(store.root / row[key]) as image:
                assert image.size == (64, 64)
    trajectories = torch.load(out / "trajectories.pt", weights_only=False)
    assert [t.id for t in trajectories] == [row["id"] for row in rows]
    assert (out / "config.yaml").is_file()


def test_an_address_that_does_not_answer_is_named_quickly(tmp_path, tiny_checkpoint, capsys):
    start = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        main(["rollout", f"run_dir={tmp_path / 'run'}", f"checkpoint={tiny_checkpoint}", *SMALL,
              "cluster.address=127.0.0.1:9", "cluster.connect_timeout_s=2"])  # fmt: skip
    assert exit_info.value.code == 2 and time.monotonic() - start < 30
    assert "cluster.address='127.0.0.1:9'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "rollout").exists()
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        probe("no-port-here", timeout_s=1.0)


def test_an_unreadable_dataset_image_and_an_empty_prompt_are_named(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "data.jsonl").write_text(json.dumps({"prompt": "a red circle", "image": "broken.png"}) + "\n")
    (tmp_path / "prompts.txt").write_text("a red circle\n\na blue square\n")
    for source, message in ((tmp_path / "data.jsonl", "row 0: field 'image': cannot decode image"),
                            (tmp_path / "prompts.txt", "prompts.txt line 2 is an empty prompt")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(["rollout", f"run_dir={tmp_path / 'run'}", f"checkpoint={tiny_checkpoint}", *SMALL,
                  "rollout=reconstruction" if source.suffix == ".jsonl" else "rollout=introspective",
                  f"rollout.source={source}"])  # fmt: skip
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "rollout").exists()
