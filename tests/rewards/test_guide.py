"""README "Writing a scorer" works as written: its module, recipe and test, copied out of the README
into a directory outside the package, run with no edit to coevolve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from coevolve.cli.main import main

README = Path(__file__).resolve().parents[2] / "README.md"


def guide_files(root: Path) -> dict[str, Path]:
    """Write the guide's three code blocks (module, recipe, test) under `root`."""
    text = README.read_text()
    section = text.split("## Writing a scorer", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(python|yaml)\n(.*?)```", section, flags=re.DOTALL)
    assert [kind for kind, _ in blocks] == ["python", "yaml", "python"], "the guide's code blocks changed"
    module, recipe, test = (code for _, code in blocks)
    assert len(module.strip().splitlines()) < 30  # "a new scorer from scratch in under 30 lines"
    paths = {
        "module": root / "my_scorers.py",
        "recipe": root / "my_conf" / "recipe" / "counted.yaml",
        "test": root / "test_my_scorers.py",
    }
    for key, code in zip(paths, (module, recipe, test)):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        paths[key].write_text(code)
    return paths


@pytest.fixture
def guide(tmp_path, monkeypatch):
    paths = guide_files(tmp_path / "user")
    monkeypatch.syspath_prepend(str(tmp_path / "user"))
    yield paths
    for name in ("my_scorers", "test_my_scorers"):
        sys.modules.pop(name, None)


def test_the_guides_own_test_passes(guide):
    import test_my_scorers

    test_my_scorers.test_counts_objects()


def test_the_guides_recipe_runs_the_users_scorer(guide, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(
        [
            "rewards",
            "--config-dir",
            str(guide["recipe"].parents[1]),
            "recipe=counted",
            f"run_dir={run_dir}",
            "reward.check.num_pairs=12",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((run_dir / "rewards" / "check.json").read_text())
    counted = report["terms"]["object_count"]
    assert set(report["terms"]) == {"image_alignment", "self_consistency", "object_count"}
    # Counting pairs differ by one object: the user's term ranks them; elsewhere the counts agree.
    assert counted["per_category"]["counting"]["positive_outranks_negative"] == 1.0
    assert counted["per_category"]["colors"]["ties"] == 1.0
    assert counted["mean_positive"] == 1.0
    saved = (run_dir / "rewards" / "config.yaml").read_text()
    assert "my_scorers.ObjectCount" in saved


@pytest.mark.slow
def test_the_guides_command_in_a_fresh_process(tmp_path):
    """Exactly the guide's command line, in the user's directory, as a subprocess."""
    user = tmp_path / "user"
    guide_files(user)
    env = {**os.environ, "PYTHONPATH": ".", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coevolve.cli.main",
            "rewards",
            "--config-dir",
            "my_conf",
            "recipe=counted",
            "reward.check.num_pairs=6",
        ],
        check=False,
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((user / "runs" / "shapes" / "rewards" / "check.json").read_text())
    assert report["terms"]["object_count"]["n"] == 6
