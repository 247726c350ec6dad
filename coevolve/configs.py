"""Composing run configurations with Hydra from the installed config trees."""

from __future__ import annotations

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

CONFIG_MODULE = "coevolve.conf"


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The base config (`conf/config.yaml`) with Hydra command-line style `overrides`."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))
