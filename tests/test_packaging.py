"""Hydra finds conf/ and recipes/ from an installed wheel, not only from the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from coevolve.config import compose_config

REPO = Path(__file__).resolve().parents[1]


def test_compose_base_config_with_overrides():
    config = compose_config(["seed=7", "model.path=/models/janus-pro-1b"])
    assert config.seed == 7 and config.model.path == "/models/janus-pro-1b"


def test_misspelt_override_is_an_error():
    with pytest.raises(Exception, match="sede"):
        compose_config(["sede=7"])


@pytest.mark.slow
def test_wheel_ships_config_trees_and_hydra_finds_them(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
    )
    wheel = next(tmp_path.glob("coevolve-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "coevolve/conf/config.yaml" in names and "coevolve/recipes/shapes.yaml" in names
    assert "coevolve/conf/sft/default.yaml" in names and "coevolve/conf/sft/lora/default.yaml" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # Run from an empty directory with only the unpacked wheel on the path: no source tree.
    path = [str(site)] + [p for p in sys.path if p not in ("", ".", str(REPO))]
    script = "import coevolve; assert 'site' in coevolve.__file__, coevolve.__file__; from coevolve.config import compose_config; c = compose_config(['seed=11', 'recipe=shapes', 'sft/lora=default']); print(c.seed, c.sft.max_steps, c.sft.lora.r)"
    result = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path[:] = {path!r}; {script}"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "11 600 16"
