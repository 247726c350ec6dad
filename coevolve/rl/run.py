"""`coevolve rl`: the single controller of GRPO (DESIGN.md sections 6 and 7).

Per step, for each program of `rl.programs`: the step's prompts (`ItemStream`) → its rollout
actors (`RolloutDriver.generate`) → its reward actor (`score`: raw and normalised terms,
advantages per segment) → then every kept trajectory, with the advantages of the segments the
current stage trains, goes to the learner actor (`Learner.train`) → the new weights go to every
rollout actor as policy version step + 1 (`rl.weight_sync`: through Ray's object store, or
broadcast over a torch.distributed group; coevolve/rl/weight_sync.py).

Writes under RUN_DIR/rl/:
- `config.yaml` (the resolved config), `metrics.jsonl` (one row per step), TensorBoard events in `tb/`
  and, with `logging.wandb`, a W&B run in `wandb/` — the same names (coevolve/utils/metrics_log.py);
- `traces/`: the trace store (coevolve/traces/store.py), one Parquet shard per step
  (`step-NNNNNN.parquet`) with every trajectory, its rewards, advantages and trained segments,
  the images as PNG under `traces/images/`;
- `checkpoint-N/`: `policy/` (HF format), `learner/` (engine, optimiser, scheduler), `step.json`,
  every `rl.save_steps` steps and at the end of each stage; the newest `save_total_limit` are kept;
- `eval/step-N/`: `coevolve eval` figures, every `rl.eval_steps` steps (and step 0) and at the end
  of each stage;
and the policy at the end of each stage as RUN_DIR/checkpoints/rl/STAGE (HF format).
`summary.json` (also returned) names the Ray node each actor started on (`placement`), so a run
on a multi-node cluster shows where its learner, rollout and reward actors went, and how the
weights travelled (`weight_sync`: the path and its counters).

`rl.resume: auto` continues from the newest `checkpoint-N`: the learner reloads weights and
optimiser state, the rollout actors get those weights as version N, the metrics rows and trace
shards after step N are dropped, and prompts and sampling seeds are pure functions of (seed, step), so the run
continues exactly as if it had not stopped.

Every check runs before any actor starts: the config (`RLConfig.check`, group sizes, segment
names), the scorer specs, the starting checkpoint, the prompt sources; the programs then check
their items on a worker before the first rollout.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import ray

from coevolve.config.schema import Config
from coevolve.learner.learner import Learner, ProgramScoring, Sample
from coevolve.model.spec import check_janus_checkpoint
from coevolve.rl.config import ProgramConfig, RLConfig
from coevolve.rl.weight_sync import build_weight_sync
from coevolve.rollout.cluster import Demand, connect
from coevolve.rollout.driver import RolloutDriver, demand
from coevolve.rollout.items import drawn_image_items, drawn_program, load_items, placeholder_image_items, shapes_items
from coevolve.rollout.programs import RolloutItem
from coevolve.traces.record import trace_row
from coevolve.traces.store import TraceWriter
from coevolve.utils.fs import atomic_output_dir, atomic_write_text
from coevolve.utils.metrics_log import MetricsLog, check_wandb
from rewards.base import resolve_scorer_spec

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
EVAL_HEADLINE = ("image_accuracy", "final_image_accuracy", "caption_accuracy", "caption_objects", "caption_shapes")


class ItemStream:
    """The prompts of each step: `rollout.num_prompts` items, a pure function of (seed, step).

    The shapes world gives fresh seeded examples every step (example index step * n + i); a file
    source is read once and cycled through in order; `program:NAME` takes the first images program
    NAME drew in the same step (`drawn`: the step's trajectories by program), so it too is a pure
    function of (seed, step)."""

    def __init__(self, name: str, program: ProgramConfig, seed: int):
        self.name, self.rollout, self.seed = name, program.rollout, seed
        self.pool: list[RolloutItem] | None = None
        self.drawn_by = drawn_program(self.rollout.source)
        if self.rollout.source != "shapes" and self.drawn_by is None:
            self.pool = load_items(self.rollout.source, self.rollout.program, 10**9, seed)
            if not self.pool:
                raise ValueError(f"rl.programs.{name}.rollout.source: {self.rollout.source} holds no prompts")

    def at(self, step: int, drawn: dict[str, list] | None = None) -> list[RolloutItem]:
        n = self.rollout.num_prompts
        if self.drawn_by is not None:
            if drawn is None or self.drawn_by not in drawn:
                raise ValueError(f"rl.programs.{self.name}: step {step} has no trajectories of {self.drawn_by!r} yet")
            items = drawn_image_items(drawn[self.drawn_by], n)
        elif self.pool is None:
            items = shapes_items(self.rollout.program, n, self.seed, start=step * n)
        else:
            items = [self.pool[(step * n + i) % len(self.pool)] for i in range(n)]
        # Ids name the groups and seed the rows: unique in the batch, stable across runs.
        return [RolloutItem(f"{self.name}-{step}-{i}", it.prompt, dict(it.metadata), it.image, it.group)
                for i, it in enumerate(items)]  # fmt: skip


def latest_checkpoint(out: Path) -> tuple[int, Path] | None:
    found = [(int(m.group(1)), p) for p in out.glob("checkpoint-*") if (m := CHECKPOINT.match(p.name))]
    found = [(step, p) for step, p in found if (p / "step.json").is_file()]
    return max(found) if found else None


def _advantage_metrics(name: str, advantages: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for segment, values in advantages.items():
        if len(values):
            out[f"{name}/advantage/{segment}/mean"] = float(values.mean())
            out[f"{name}/advantage/{segment}/std"] = float(values.std())
            out[f"{name}/advantage/{segment}/abs_max"] = float(np.abs(values).max())
    return out


def _eval_scalars(figures: dict) -> dict[str, float]:
    out = {}
    for key in EVAL_HEADLINE:
        out[f"eval/{key}"] = figures[key]["accuracy"]
        for tag, cell in figures[key].get("per_category", {}).items():
            out[f"eval/{key}/{tag}"] = cell["accuracy"]
    for key in ("verdict_accuracy_own", "verdict_accuracy_heldout"):
        for source in ("p_yes", "text"):
            out[f"eval/{key}/{source}"] = figures[key][source]["accuracy"]
            if (balanced := figures[key][source]["balanced_accuracy"]) is not None:  # None: one class only
                out[f"eval/{key}/{source}/balanced_accuracy"] = balanced
        for name in ("auc", "auc_within_category"):
            if (auc := figures[key]["p_yes"].get(name)) is not None:
                out[f"eval/{key}/p_yes/{name}"] = auc
    out["eval/format_rate"] = figures["format_rate"]["rate"]
    for key in ("reconstruction", "caption_reconstruction"):
        if figures.get(key) is not None:
            out[f"eval/{key}"] = figures[key]["mean_similarity"]
    return out


def _check(config: Config) -> None:
    rl = config.rl
    rl.__post_init__()
    rl.check()
    check_janus_checkpoint(Path(rl.checkpoint), "rl.checkpoint")
    check_wandb(config.logging)
    for name, program in rl.programs.items():
        program.reward.__post_init__()
        for term_name, term in program.reward.terms.items():
            resolve_scorer_spec(term.scorer, f"rl.programs.{name}.reward.terms.{term_name}.scorer")


def _save_checkpoint(learner, out: Path, step: int, limit: int | None) -> None:
    target = out / f"checkpoint-{step}"
    with atomic_output_dir(target, overwrite=True) as staging:
        ray.get(learner.save.remote(str(staging)))
        (staging / "step.json").write_text(json.dumps({"step": step}) + "\n")
    if limit is not None:
        found = sorted((int(m.group(1)), p) for p in out.glob("checkpoint-*") if (m := CHECKPOINT.match(p.name)))
        for _, path in found[:-limit]:
            shutil.rmtree(path, ignore_errors=True)


def _write_traces(traces: TraceWriter, step: int, run: str, batches: list[tuple[list, object, dict]]) -> None:
    rows = []
    for trajectories, rewards, trained in batches:
        by_id = {row["id"]: row for row in rewards.rows()}
        for trajectory in trajectories:
            row = trace_row(trajectory, traces.root, run, step, by_id.get(trajectory.id))
            row["dropped"] = trajectory.id not in by_id
            row["trained_segments"] = sorted(trained.get(trajectory.id, ()))
            rows.append(row)
    traces.write_step(step, rows)


def run_demand(rl: RLConfig) -> Demand:
    """The CPUs/GPUs a run's actors reserve together: the learner, and each program's rollout and
    reward workers (all alive for the whole run)."""
    need = Demand(rl.learner.num_cpus, rl.learner.num_gpus)
    for program in rl.programs.values():
        part = demand(program.rollout, program.reward)
        need = Demand(need.num_cpus + part.num_cpus, need.num_gpus + part.num_gpus)
    return need


def placement(learner, drivers: dict[str, RolloutDriver]) -> dict[str, str]:
    """Actor name (`learner`, `PROGRAM/rollout/INDEX`, `PROGRAM/reward`) -> the Ray node id it runs
    on; `driver`: the node of this process (the controller, through which the weights pass)."""
    out = {"driver": ray.get_runtime_context().get_node_id(), "learner": ray.get(learner.node_id.remote())}
    for name, driver in drivers.items():
        out.update({f"{name}/{actor}": node for actor, node in driver.placement().items()})
    return out


def run_rl(config: Config, run_dir: Path) -> dict:
    """Train (see the module docstring); returns a summary (also `rl/summary.json`)."""
    started = time.time()
    _check(config)
    rl: RLConfig = config.rl
    out = run_dir / "rl"
    found = latest_checkpoint(out) if out.is_dir() else None
    if rl.resume == "never" and out.is_dir() and any(out.glob("checkpoint-*")):
        raise FileExistsError(f"rl.resume=never but {out} holds checkpoints; use rl.resume=auto or another run_dir")
    streams = {name: ItemStream(name, program, config.seed) for name, program in rl.programs.items()}
    start_step = found[0] if found and rl.resume == "auto" else 0
    if start_step >= rl.total_steps:
        raise ValueError(f"{out} already holds step {start_step} of {rl.total_steps}: nothing to do")

    learner_device = "cuda" if rl.learner.num_gpus > 0 else "cpu"
    ray_started = connect(config.cluster, run_demand(rl))
    drivers: dict[str, RolloutDriver] = {}
    learner = None
    metrics = None
    try:
        scoring = {
            name: ProgramScoring(program.rollout.guidance(config.model.unconditional), program.rollout.sampling)
            for name, program in rl.programs.items()
        }
        learner_args = (str(rl.checkpoint), rl.learner, config.engine, scoring, rl.total_steps, config.model.dtype)
        learner = (
            ray.remote(Learner)
            .options(num_cpus=rl.learner.num_cpus, num_gpus=rl.learner.num_gpus)
            .remote(*learner_args, learner_device)
        )
        for name, program in rl.programs.items():
            drivers[name] = RolloutDriver(
                rl.checkpoint, program.rollout, config.model.unconditional, config.seed,
                reward=program.reward, dtype=config.model.dtype,
            )  # fmt: skip
        ray.get(learner.ping.remote())
        nodes = placement(learner, drivers)
        for name, driver in drivers.items():
            stream = streams[name]
            if stream.drawn_by is None:
                driver.check(stream.at(start_step))
            else:  # no images before the program it judges draws: its prompts, on blank images
                driver.check(placeholder_image_items(streams[stream.drawn_by].at(start_step)))
        sync = build_weight_sync(rl, learner, drivers)
        sync.start()
        if start_step:
            ray.get(learner.load.remote(str(found[1])))
            sync(start_step)
        out.mkdir(parents=True, exist_ok=True)
        run_config = dataclasses.asdict(config)
        metrics = MetricsLog(out, start_step, config.logging, run_config)
        traces = TraceWriter(out / "traces", run_config, programs=run_config["rl"]["programs"])
        traces.discard_after(start_step)  # what a stopped run wrote past its checkpoint
        evals = {}

        def evaluate(step: int) -> dict:
            figures = ray.get(
                learner.evaluate.remote(config.eval, config.model.unconditional, str(out / "eval" / f"step-{step}"))
            )
            evals[step] = _eval_scalars(figures)
            return evals[step]

        if start_step == 0 and rl.eval_steps:
            metrics.write({"step": 0, **evaluate(0)})
        for step in range(start_step, rl.total_steps):
            step_started = time.perf_counter()
            stage_index, stage = rl.stage_at(step)
            row: dict = {"step": step + 1, "stage": stage.name}
            samples, batches = [], []
            versions = []
            drawn: dict[str, list] = {}
            for name, program in rl.programs.items():
                if not stage.samples(name):
                    continue
                t0 = time.perf_counter()
                trajectories = drivers[name].generate(streams[name].at(step, drawn), step)
                drawn[name] = trajectories
                row[f"timing/{name}/rollout_s"] = time.perf_counter() - t0
                for phase, seconds in drivers[name].timings.items():
                    row[f"timing/{name}/phase/{phase}_s"] = seconds
                t0 = time.perf_counter()
                rewards = drivers[name].score(trajectories)
                row[f"timing/{name}/reward_s"] = time.perf_counter() - t0
                for key, value in rewards.metrics().items():  # a term's seconds are a timing, not a reward
                    row[f"timing/{name}/{key}" if key.endswith("/seconds") else f"{name}/{key}"] = value
                for term, values in rewards.normalized.items():
                    if len(values):
                        row[f"{name}/reward/{term}/normalized_abs_mean"] = float(np.abs(values).mean())
                row.update(_advantage_metrics(name, rewards.advantages))
                trained: dict[str, set] = {}
                for position, index in enumerate(rewards.kept):
                    trajectory = trajectories[index]
                    advantages = {
                        segment: float(values[position])
                        for segment, values in rewards.advantages.items()
                        if (stage.segments is None or segment in stage.segments) and trajectory.has(segment)
                    }
                    if advantages:
                        samples.append(Sample(name, trajectory, advantages))
                        trained[trajectory.id] = set(advantages)
                    versions.append(trajectory.policy_version)
                batches.append((trajectories, rewards, trained))
            row["policy/version_lag/max"] = max(step - v for v in versions) if versions else 0
            row["policy/version_lag/mean"] = float(np.mean([step - v for v in versions])) if versions else 0.0
            row["learner/samples"] = len(samples)
            if samples:
                t0 = time.perf_counter()
                row.update(ray.get(learner.train.remote(samples)))
                row["timing/learner_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                sync(step + 1)
                row["timing/weight_sync_s"] = time.perf_counter() - t0
            else:
                # Nothing to learn from (every group dropped): the policy stays; its version moves on.
                sync(step + 1)
            t0 = time.perf_counter()
            _write_traces(traces, step + 1, str(run_dir), batches)
            row["timing/traces_s"] = time.perf_counter() - t0
            done = step + 1
            stage_end = done == sum(s.steps for s in rl.stages[: stage_index + 1])
            if (rl.eval_steps and done % rl.eval_steps == 0) or stage_end:
                t0 = time.perf_counter()
                row.update(evaluate(done))
                row["timing/eval_s"] = time.perf_counter() - t0
            row["timing/step_s"] = time.perf_counter() - step_started  # checkpoint saving follows, uncounted
            metrics.write(row)
            # The stage's policy before the step's checkpoint: a run killed in between resumes
            # before the stage's end and saves it again, never past a stage end with no policy.
            if stage_end:
                ray.get(learner.save_policy.remote(str(run_dir / "checkpoints" / "rl" / stage.name)))
            if done % rl.save_steps == 0 or stage_end:
                _save_checkpoint(learner, out, done, rl.save_total_limit)
    finally:
        if metrics is not None:
            metrics.close()
        for driver in drivers.values():
            driver.shutdown()
        if learner is not None:
            ray.kill(learner, no_restart=True)
        if ray_started:
            ray.shutdown()
    summary = {
        "resumed_from": start_step or None,
        "steps": rl.total_steps,
        "stages": [stage.name for stage in rl.stages],
        "checkpoints": {stage.name: str(run_dir / "checkpoints" / "rl" / stage.name) for stage in rl.stages},
        "eval": {str(step): figures for step, figures in evals.items()},
        "seconds": round(time.time() - started, 1),
        "placement": nodes,
        "weight_sync": {"path": sync.name, **sync.stats},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
