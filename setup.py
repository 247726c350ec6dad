"""Packaging detail pyproject.toml cannot express: `conf/` and `recipes/` live at the top of the
repository but install as `coevolve.conf` and `coevolve.recipes`, so Hydra finds them as
`pkg://coevolve.conf` whether the package is installed editable or from a wheel. The trace viewer's
templates (coevolve/traces/templates/) ship as package data."""

from setuptools import find_packages, setup

CONFIG_TREES = {"coevolve.conf": "conf", "coevolve.recipes": "recipes"}

setup(
    packages=find_packages(include=["coevolve", "coevolve.*", "rewards", "rewards.*"]) + list(CONFIG_TREES),
    package_dir=CONFIG_TREES,
    package_data={**{name: ["**/*.yaml"] for name in CONFIG_TREES}, "coevolve.traces": ["templates/*"]},
)
