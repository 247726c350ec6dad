"""Composing run configurations with Hydra: `conf/` (base + groups), `recipes/`, the typed schema.

`register()` puts the schema (`schema.Config`, as `coevolve_schema`) and every recipe file of the
installed `coevolve.recipes` tree into Hydra's ConfigStore: recipes become the options of the
`recipe` group (`recipes/shapes.yaml` is `recipe=shapes`, `recipes/shapes/lora.yaml` is
`recipe=shapes/lora`), whether coevolve runs from a checkout or from a wheel.
"""

from __future__ import annotations

from importlib import resources

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from coevolve.config.schema import Config

CONFIG_MODULE = "coevolve.conf"
RECIPES_MODULE = "coevolve.recipes"


def _recipe_files(root, prefix: str = ""):
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _recipe_files(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".yaml"):
            yield prefix + entry.name[: -len(".yaml")], entry


def register() -> None:
    """Store the schema and the recipes in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="coevolve_schema", node=Config)
    for name, entry in _recipe_files(resources.files(RECIPES_MODULE)):
        group, _, option = f"recipe/{name}".rpartition("/")
        node = OmegaConf.create(entry.read_text())
        store.store(group=group, name=option, node=node, package="_global_")


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The composed config (base + groups + recipe) with Hydra command-line style `overrides`."""
    register()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


def _missing_keys(node, prefix: str = "") -> list[str]:
    """Full keys of the `???` values in a plain container (`OmegaConf.missing_keys` would stop at
    the first interpolation that points at one)."""
    if isinstance(node, dict):
        children = [(f"{prefix}.{key}" if prefix else str(key), value) for key, value in node.items()]
    elif isinstance(node, list):
        children = [(f"{prefix}[{index}]", value) for index, value in enumerate(node)]
    else:
        return []
    return [key for key, value in children if value == MISSING] + [
        key for child, value in children for key in _missing_keys(value, child)
    ]


def to_typed(config: DictConfig) -> Config:
    """The composed config as dataclasses, running each group's `__post_init__` checks.

    Every value still `???` (a recipe's mandatory path the command line did not give) is named in
    one `MissingMandatoryValue`, not only the first one met.
    """
    missing = _missing_keys(OmegaConf.to_container(config, resolve=False))
    if missing:
        raise MissingMandatoryValue(f"no value given for {', '.join(missing)} (set each as KEY=VALUE)")
    return OmegaConf.to_object(config)
