"""The `coevolve` command: figures as JSON, bad input as a named error, interrupted bootstrap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from transformers import JanusForConditionalGeneration

from coevolve.cli.main import main


def test_bench_verifier_prints_json(capsys):
    assert main(["bench", "verifier", "--n", "24", "--seed", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 24 and set(result["per_tag"]) == {
        "single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert result["accuracy"] == 1.0


def test_bootstrap_refuses_non_empty_dir(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["bootstrap", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "taken exists and is not empty" in err and "--overwrite" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_bench_vq_needs_a_model(capsys):
    with pytest.raises(SystemExit, match="--model"):
        main(["bench", "vq", "--n", "6"])


@pytest.mark.slow
def test_interrupted_bootstrap_leaves_nothing_that_loads(tmp_path):
    out = tmp_path / "tiny"
    process = subprocess.Popen(
        [sys.executable, "-m", "coevolve.cli.main", "bootstrap", "tiny", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    # Wait until the VQ tokenizer is training (files are being produced in staging), then kill.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.name.startswith(".tiny.partial-") for p in tmp_path.iterdir()):
        time.sleep(0.2)
    time.sleep(8)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    with pytest.raises(OSError):
        JanusForConditionalGeneration.from_pretrained(out)
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers and all(name.startswith(".tiny.partial-") for name in leftovers)
