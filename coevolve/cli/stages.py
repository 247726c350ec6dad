"""The Hydra-configured stages of the `coevolve` command: `pipeline` (recipe=shapes unless another
is named), `sft`, `rl`, `eval`, `rewards`, `rollout`.

`coevolve STAGE [overrides...]` hands the overrides to a Hydra app, so everything Hydra offers
works: `key=value`, `GROUP=OPTION`, `recipe=NAME`, `-m` sweeps, `--cfg job`. The composed
config is checked against the schema (types, keys, each group's `__post_init__`) before any
work starts, and saved resolved as `config.yaml` in the stage's directory.

Recipes of your own: put `recipe/NAME.yaml` (starting `# @package _global_`) in a directory and
add it to the search path with `--config-dir DIR` (or `hydra.searchpath=[file://DIR]`); then
`recipe=NAME` finds it beside the installed ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from coevolve.config import CONFIG_MODULE, register, to_typed
from coevolve.utils.fs import atomic_write_text
from rewards.base import ScorerError


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _save_config(cfg: DictConfig, stage_dir: Path) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stage_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def sft_stage(cfg: DictConfig) -> None:
    from coevolve.sft.run import run_sft

    config = to_typed(cfg)
    run_dir = _run_dir()
    _save_config(cfg, run_dir / "sft")
    print(json.dumps(run_sft(config, run_dir), indent=2))


def _eval_adapter(config):
    import torch

    from coevolve.model import JanusAdapter

    dtype = getattr(torch, config.model.dtype)
    return JanusAdapter.from_pretrained(config.model.path, dtype=dtype, device=config.eval.torch_device)


def eval_stage(cfg: DictConfig) -> None:
    """The suite `eval.suite` names (coevolve/eval/config.py) on `model.path`."""
    config = to_typed(cfg)
    checkpoint = Path(config.model.path)
    if config.eval.suite == "shapes":
        from coevolve.eval.shapes import evaluate_shapes

        out_dir = _run_dir() / "eval" / checkpoint.name
        # The evaluation is a pure function of checkpoint and config: a rerun replaces the last one.
        figures = evaluate_shapes(
            _eval_adapter(config),
            config.eval,
            unconditional=config.model.unconditional,
            out_dir=out_dir,
            overwrite=True,
        )
        _save_config(cfg, out_dir)
        print(json.dumps(figures, indent=2))
        return
    from coevolve.utils.fs import OutputExistsError, check_output_dir

    name = config.eval.suite
    suite = getattr(config.eval, name)
    out_dir = Path(suite.out_dir or _run_dir() / "eval" / name / checkpoint.name)
    if name == "geneval":
        from coevolve.eval.geneval import generate_geneval as generate
        from coevolve.eval.geneval import read_metadata

        prompts = read_metadata(suite.metadata_file, suite.limit)
    else:
        from coevolve.eval.dpg import generate_dpg as generate
        from coevolve.eval.dpg import read_prompts

        prompts = read_prompts(suite.prompts_dir, suite.limit)
    # Bad prompts and a taken output folder fail before the model loads; the suite's folder holds
    # only what its scorer reads (Hydra keeps the composed config in RUN_DIR/.hydra/).
    try:
        check_output_dir(out_dir.absolute(), suite.overwrite)
    except OutputExistsError as error:
        raise OutputExistsError(str(error).replace("pass --overwrite", f"set eval.{name}.overwrite=true")) from None
    summary = generate(_eval_adapter(config), prompts, out_dir, config.eval, config.model.unconditional)
    print(json.dumps(summary, indent=2))


def rewards_stage(cfg: DictConfig) -> None:
    """The reward designer's check: the configured terms on seeded shapes pairs (rewards/check.py)."""
    from rewards.check import check_report, shapes_pairs
    from rewards.terms import RewardTerms

    config = to_typed(cfg)
    out_dir = _run_dir() / "rewards"
    terms = RewardTerms.from_config(config.reward)  # every scorer spec is checked before any is built
    report = check_report(terms, shapes_pairs(config.reward.check.num_pairs, config.reward.check.seed))
    _save_config(cfg, out_dir)
    atomic_write_text(out_dir / "check.json", json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def rollout_stage(cfg: DictConfig) -> None:
    """The rollout program once on a prompt set, on Ray workers (coevolve/rollout/run.py)."""
    from coevolve.rollout.run import run_rollout

    config = to_typed(cfg)
    out_dir = _run_dir() / "rollout" / Path(config.model.path).name
    # A rerun replaces the last one (the output appears only once complete).
    summary = run_rollout(config, out_dir, run=str(_run_dir()), overwrite=True)
    _save_config(cfg, out_dir)
    print(json.dumps(summary, indent=2))


def rl_stage(cfg: DictConfig) -> None:
    """GRPO from `rl.checkpoint` on the recipe's programs and reward terms (coevolve/rl/run.py)."""
    from coevolve.rl.run import run_rl

    config = to_typed(cfg)
    run_dir = _run_dir()
    _save_config(cfg, run_dir / "rl")
    print(json.dumps(run_rl(config, run_dir), indent=2))


def pipeline_stage(cfg: DictConfig) -> None:
    """Every stage in turn, each skipped when its output is complete (coevolve/pipeline.py)."""
    from coevolve.pipeline import run_pipeline

    config = to_typed(cfg)
    _save_config(cfg, _run_dir() / "pipeline")
    run_pipeline(config)


STAGES = {
    "pipeline": pipeline_stage,
    "sft": sft_stage,
    "eval": eval_stage,
    "rewards": rewards_stage,
    "rollout": rollout_stage,
    "rl": rl_stage,
}
ALIASES = {"checkpoint": "model.path", "suite": "eval"}
"""Short override keys: `checkpoint=DIR` is `model.path=DIR`; `suite=NAME` picks the eval group's
option NAME (`eval=NAME`: shapes, geneval, dpg)."""


def _expand(override: str) -> str:
    key, sep, value = override.partition("=")
    return f"{ALIASES[key]}={value}" if sep and key in ALIASES else override


def _reporting(stage: str, function):
    def task(cfg: DictConfig) -> None:
        try:
            function(cfg)
        except (ValueError, FileNotFoundError, FileExistsError, ScorerError, MissingMandatoryValue) as error:
            print(f"coevolve {stage}: error: {error}", file=sys.stderr)
            raise SystemExit(2) from error

    return task


def run_stage(stage: str, overrides: list[str]) -> int:
    """Run `stage` as a Hydra app with command-line `overrides`; returns the exit code."""
    register()
    app = hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="config", version_base="1.3")(
        _reporting(stage, STAGES[stage])
    )
    overrides = [_expand(override) for override in overrides]
    if stage == "pipeline" and not any(o.startswith(("recipe=", "+recipe=")) for o in overrides):
        overrides.insert(0, "recipe=shapes")  # the main job's default: the built-in shapes world
    argv = sys.argv
    sys.argv = [f"coevolve {stage}", *overrides]
    try:
        app()
    finally:
        sys.argv = argv
    return 0
