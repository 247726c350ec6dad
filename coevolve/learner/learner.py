"""The GRPO learner: trajectories + advantages in, one policy update out (DESIGN.md section 6).

A plain class; the controller makes it a Ray actor (`ray.remote(Learner)`), as rollout workers are.

`train(samples)` on one batch of rollouts:

1. every sample's trajectory is rebuilt as the model sequences it was sampled in
   (`programs.teacher_forced`); only sequences holding a trained segment are scored;
2. when the policy will move within the step (`num_iterations` > 1 or `steps_per_generation` > 1)
   the old log-probs are scored first, without gradient, as TRL does; otherwise the current
   log-probs, detached, are the old ones. With `beta` != 0 the reference policy's log-probs are
   scored once too: the base model with the LoRA adapter disabled, or a frozen copy of the
   starting weights;
3. for each PPO epoch, the batch is cut into `steps_per_generation` mini-batches (whole samples,
   in order); each is scored in micro-batches of `micro_batch_size` trajectories under
   `image_logprob_mode` with the program's own guidance and sampling (so trainer and sampler
   log-probs are comparable for the IS correction), its `policy_loss` back-propagated, and one
   optimiser step taken per mini-batch.

Micro-batch losses add up to the mini-batch's loss: `dapo` divides by the mini-batch's active
tokens (`num_items_in_batch`), `grpo` and `dr_grpo` are weighted by the micro-batch's share of
sequences, `bnpo` is averaged over micro-batches (TRL's gradient-accumulation behaviour).

A token is trained when its segment has an advantage (a reward term trains it and the stage
includes it) and the segment's mask says the policy drew it.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from coevolve.config.schema import EngineConfig
from coevolve.learner.engine import OptimConfig, build_engine
from coevolve.learner.losses import entropy_stats, policy_loss
from coevolve.model.adapter import JanusAdapter
from coevolve.model.guidance import CFGMode, Guidance
from coevolve.model.sampling import Sampling
from coevolve.model.scoring import score
from coevolve.rl.config import LearnerConfig
from coevolve.rollout.programs import teacher_forced
from coevolve.trajectory import Trajectory
from coevolve.utils.checksum import state_checksums
from coevolve.utils.collective import Manifest, WeightGroup, manifest_of, serve_store


@dataclass
class Sample:
    """One trajectory to learn from: the program (`rl.programs` key) that sampled it and the
    advantage of each segment it trains."""

    program: str
    trajectory: Trajectory
    advantages: dict[str, float]


@dataclass(frozen=True)
class ProgramScoring:
    """How a program's images and text were sampled, so the trainer scores them the same way."""

    guidance: Guidance
    sampling: Sampling


@dataclass
class _Tokens:
    """One sample's trained tokens, its segments laid side by side."""

    logprobs: torch.Tensor  # (T,) under the scoring policy
    entropies: torch.Tensor  # (T,)


class Learner:
    def __init__(
        self,
        checkpoint: str,
        config: LearnerConfig,
        engine: EngineConfig,
        scoring: dict[str, ProgramScoring],
        total_steps: int,
        dtype: str = "float32",
        device: str = "cpu",
    ):
        adapter = JanusAdapter.from_pretrained(checkpoint, dtype=getattr(torch, dtype), device=device)
        self.config, self.scoring, self.processor = config, dict(scoring), adapter.processor
        optim = OptimConfig(**asdict(config.optimizer), total_steps=total_steps * config.steps_per_generation
                            * config.num_iterations)  # fmt: skip
        self.engine = build_engine(adapter.model, engine, optim, config.lora, config.gradient_checkpointing)
        # The adapter over the trained module (LoRA layers injected), for scoring and evaluation.
        self.adapter = JanusAdapter(self.engine.janus, self.processor)
        self._frozen = None
        if config.loss.beta != 0 and not self.engine.has_adapter:
            self._frozen = JanusAdapter(self.engine.frozen_copy(), self.processor)
        self.mode = CFGMode(config.image_logprob_mode)
        self.updates = 0  # optimiser steps taken
        self._weight_store = None  # the weight group's store (rl.weight_sync: collective), and the group
        self._weight_group: WeightGroup | None = None

    def ping(self) -> int:
        return self.updates

    # -- scoring ---------------------------------------------------------------------------------

    def _score(self, samples: Sequence[Sample], adapter: JanusAdapter) -> list[dict[str, tuple]]:
        """Per sample, trained segment name -> (log-probs, entropies) of its ids, under `adapter`'s model."""
        by_program: dict[str, list[tuple[int, object, dict[str, int]]]] = defaultdict(list)
        for index, sample in enumerate(samples):
            for piece in teacher_forced(adapter, sample.trajectory):
                wanted = {name: j for name, j in piece.segments.items() if name in sample.advantages}
                if wanted:
                    by_program[sample.program].append((index, piece.sequence, wanted))
        out: list[dict[str, tuple]] = [{} for _ in samples]
        for program, pieces in by_program.items():
            if program not in self.scoring:
                raise ValueError(f"learner: no scoring settings for program {program!r} (have {list(self.scoring)})")
            spec = self.scoring[program]
            scores = score(adapter.model, adapter.spec, [sequence for _, sequence, _ in pieces], self.mode,
                           spec.guidance, spec.sampling)  # fmt: skip
            for k, (index, _, wanted) in enumerate(pieces):
                for name, j in wanted.items():
                    out[index][name] = (scores.logprobs[k][j], scores.entropies[k][j])
        return out

    @staticmethod
    def _trained(sample: Sample) -> list:
        """The sample's trained segments, in trajectory order."""
        return [segment for segment in sample.trajectory.segments if segment.name in sample.advantages]

    def _token_tensors(self, samples: Sequence[Sample], adapter: JanusAdapter) -> tuple[list, list]:
        """Per sample, the log-probs and entropies of its trained tokens (segments side by side)."""
        scored = self._score(samples, adapter)
        logprobs, entropies = [], []
        for sample, by_name in zip(samples, scored):
            trained = self._trained(sample)
            missing = [segment.name for segment in trained if segment.name not in by_name]
            if missing:
                raise ValueError(f"trajectory {sample.trajectory.id!r}: segments {missing} were not rebuilt for scoring")
            empty = torch.zeros(0, device=adapter.model.device)
            logprobs.append(torch.cat([by_name[s.name][0] for s in trained]) if trained else empty)
            entropies.append(torch.cat([by_name[s.name][1] for s in trained]) if trained else empty)
        return logprobs, entropies

    def _tokens(self, samples: Sequence[Sample], adapter: JanusAdapter, train: bool = False) -> list[_Tokens]:
        """`_token_tensors`; with `train`, as one forward pass of the engine (ZeRO-3 needs its hooks
        to see the pass that the backward will follow)."""
        if train:
            logprobs, entropies = self.engine.forward(lambda _module: self._token_tensors(samples, adapter))
        else:
            logprobs, entropies = self._token_tensors(samples, adapter)
        return [_Tokens(lp, ent) for lp, ent in zip(logprobs, entropies)]

    @torch.no_grad()
    def _fixed_logprobs(self, samples: Sequence[Sample], reference: bool) -> list[torch.Tensor]:
        """Log-probs without gradient: of the current policy (old), or of the reference policy."""
        result = []
        for start in range(0, len(samples), self.config.micro_batch_size):
            chunk = samples[start : start + self.config.micro_batch_size]
            if not reference:
                tokens = self._tokens(chunk, self.adapter)
            elif self._frozen is not None:
                tokens = self._tokens(chunk, self._frozen)
            else:
                with self.engine.reference():
                    tokens = self._tokens(chunk, self.adapter)
            result.extend(t.logprobs.detach() for t in tokens)
        return result

    # -- one update ------------------------------------------------------------------------------

    def _batch(self, samples: Sequence[Sample], device) -> dict[str, torch.Tensor]:
        """Padded (B, T) constants of the samples: advantages, masks, sampling log-probs, is_image."""
        rows = {"advantages": [], "mask": [], "sampling": [], "is_image": []}
        for sample in samples:
            trained = self._trained(sample)
            if not trained:
                rows["advantages"].append(torch.zeros(0))
                rows["mask"].append(torch.zeros(0, dtype=torch.bool))
                rows["sampling"].append(torch.zeros(0))
                rows["is_image"].append(torch.zeros(0, dtype=torch.bool))
                continue
            for segment in trained:
                if segment.ids is None or segment.logprobs is None or segment.mask is None:
                    raise ValueError(
                        f"trajectory {sample.trajectory.id!r}: segment {segment.name!r} has no ids/log-probs/mask "
                        f"to train (it was not sampled by a model)"
                    )
            rows["advantages"].append(torch.cat([torch.full((len(s.ids),), float(sample.advantages[s.name]))
                                                 for s in trained]))  # fmt: skip
            rows["mask"].append(torch.cat([s.mask.bool() for s in trained]))
            rows["sampling"].append(torch.cat([s.logprobs.float() for s in trained]))
            rows["is_image"].append(torch.cat([torch.full((len(s.ids),), s.kind == "image") for s in trained]))
        return {key: _pad(values).to(device) for key, values in rows.items()}

    def _loss_scale(self, micro: int, mini: int, num_micro: int) -> float:
        loss_type = self.config.loss.loss_type
        if loss_type in ("grpo", "dr_grpo"):
            return micro / mini
        if loss_type == "bnpo":
            return 1.0 / num_micro
        return 1.0  # dapo: num_items_in_batch is the mini-batch's active tokens

    def train(self, samples: Sequence[Sample]) -> dict[str, float]:
        """One policy update on a batch of rollouts; returns the step's metrics (see the module doc)."""
        if not samples:
            raise ValueError("learner.train got no samples")
        config, started = self.config, time.perf_counter()
        samples = list(samples)
        device = self.adapter.model.device
        moves_within_step = config.num_iterations > 1 or config.steps_per_generation > 1
        old = self._fixed_logprobs(samples, reference=False) if moves_within_step else None
        ref = self._fixed_logprobs(samples, reference=True) if config.loss.beta != 0 else None
        fixed_seconds = time.perf_counter() - started

        count = len(samples)
        parts = min(config.steps_per_generation, count)
        bounds = [round(i * count / parts) for i in range(parts + 1)]
        stats: dict[str, list[tuple[float, float]]] = defaultdict(list)
        steps: list[dict] = []
        trained_tokens = 0
        for _ in range(config.num_iterations):
            for a, b in itertools.pairwise(bounds):
                mini = samples[a:b]
                constants = self._batch(mini, device)
                num_items = float(constants["mask"].sum())
                micros = list(range(a, b, config.micro_batch_size))
                for start in micros:
                    end = min(start + config.micro_batch_size, b)
                    chunk = samples[start:end]
                    tokens = self._tokens(chunk, self.adapter, train=True)
                    rows = slice(start - a, end - a)
                    width = constants["mask"].shape[1]
                    logprobs = _pad([t.logprobs for t in tokens], width)
                    entropies = _pad([t.entropies.detach() for t in tokens], width)
                    mask = constants["mask"][rows]
                    loss, step_stats = policy_loss(
                        logprobs,
                        None if old is None else _pad(old[start:end], width).to(device),
                        constants["advantages"][rows],
                        mask,
                        config.loss,
                        sampling_logprobs=constants["sampling"][rows],
                        ref_logprobs=None if ref is None else _pad(ref[start:end], width).to(device),
                        num_items_in_batch=max(num_items, 1.0),
                    )
                    loss = loss * self._loss_scale(end - start, b - a, len(micros))
                    self.engine.backward(loss)
                    weight = float(mask.sum())
                    trained_tokens += int(weight)
                    step_stats.update(entropy_stats(entropies, mask, constants["is_image"][rows]))
                    step_stats["loss"] = loss.detach()
                    for key, value in step_stats.items():
                        stats[key].append((float(value), 1.0 if key == "loss" else weight))
                steps.append(self.engine.step())
                self.updates += 1
        metrics = {f"learner/{key}": _combine(key, values) for key, values in stats.items()}
        metrics["learner/loss"] = sum(v for v, _ in stats["loss"]) / max(1, len(steps))
        metrics["learner/grad_norm"] = sum(s["grad_norm"] for s in steps) / len(steps)
        metrics["learner/learning_rate"] = steps[-1]["learning_rate"]
        metrics["learner/optimizer_steps"] = self.updates
        metrics["learner/trained_tokens"] = trained_tokens / config.num_iterations
        metrics["timing/learner_fixed_logprobs_s"] = fixed_seconds
        metrics["timing/learner_update_s"] = time.perf_counter() - started - fixed_seconds
        return metrics

    # -- weights, checkpoints, evaluation ----------------------------------------------------------

    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        """The policy's full weights as a plain Janus state dict (what rollout workers load)."""
        return self.engine.policy_state_dict()

    def weights_checksum(self) -> dict[str, str]:
        """Key -> sha256 of every tensor of `policy_state_dict()`: after a weight sync, each rollout
        worker's `weights_checksum()` is this same dict."""
        return state_checksums(self.policy_state_dict())

    def node_id(self) -> str:
        """The id of the Ray node this actor runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def gpu_ids(self) -> tuple[str, ...]:
        """The ids of the GPUs Ray gave this actor (on its node)."""
        import ray

        return tuple(str(gpu) for gpu in ray.get_gpu_ids())

    # -- the weight group (rl.weight_sync: collective; coevolve/utils/collective.py) ---------------

    def open_weight_group(self, timeout_s: float) -> tuple[str, int]:
        """Host the weight group's store on a free port of this node, for the run; returns (address, port)."""
        import ray

        if self._weight_store is None:
            self._weight_store = serve_store(ray.util.get_node_ip_address(), timeout_s)
        return self._weight_store.host, self._weight_store.port

    def weight_manifest(self) -> Manifest:
        """What a broadcast sends: every tensor of the policy state dict (key, shape, dtype)."""
        return manifest_of(self.engine.policy_state_dict(views=True))

    def join_weight_group(self, generation: int, world_size: int, backend: str, manifest: Manifest,
                          bucket_bytes: int, timeout_s: float) -> None:  # fmt: skip
        """Form generation `generation` of the weight group as rank 0 (blocks until every member joined)."""
        if self._weight_store is None:
            raise RuntimeError("open_weight_group first")
        if self._weight_group is not None:
            self._weight_group.close()
            self._weight_group = None
        host = self._weight_store.host
        self._weight_group = WeightGroup(host, self._weight_store.port, 0, world_size, generation, backend, manifest,
                                         bucket_bytes, timeout_s, host, store=self._weight_store)  # fmt: skip

    def broadcast_weights(self, generation: int) -> int:
        """Send the policy's weights to the group's other members (each calls `receive_weights`);
        returns the bytes sent."""
        group = self._weight_group
        if group is None or group.generation != generation:
            raise RuntimeError(f"learner: not in weight group generation {generation}")
        return group.broadcast(self.engine.policy_state_dict(views=True))

    def save(self, directory: str) -> None:
        """`policy/` (an HF checkpoint) and `learner/` (engine, optimiser, scheduler) under `directory`."""
        directory = Path(directory)
        self.engine.save_pretrained(directory / "policy", self.processor)
        self.engine.save_state(directory / "learner")
        (directory / "learner" / "updates.txt").write_text(f"{self.updates}\n")

    def save_policy(self, path: str) -> None:
        self.engine.save_pretrained(Path(path), self.processor)

    def load(self, directory: str) -> None:
        directory = Path(directory)
        self.engine.load_state(directory / "learner")
        self.updates = int((directory / "learner" / "updates.txt").read_text())

    def evaluate(self, eval_config, unconditional: str, out_dir: str | None = None) -> dict:
        """`coevolve eval`'s figures for the current policy."""
        from coevolve.eval.shapes import evaluate_shapes

        model = self.adapter.model
        was_training = model.training
        model.eval()
        try:
            return evaluate_shapes(self.adapter, eval_config, unconditional=unconditional, out_dir=out_dir,
                                   overwrite=True)  # fmt: skip
        finally:
            model.train(was_training)


def _pad(rows: Sequence[torch.Tensor], width: int | None = None) -> torch.Tensor:
    """Right-pad 1-D tensors into (B, width) with zeros (the loss masks padding)."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    if not rows:
        return torch.zeros(0, width)
    out = rows[0].new_zeros((len(rows), width))
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _combine(key: str, values: list[tuple[float, float]]) -> float:
    """Micro-batch statistics -> one figure: min of mins, max of maxes, else the weighted mean of the finite ones."""
    finite = [(v, w) for v, w in values if math.isfinite(v)]
    if not finite:
        return math.nan
    if key.endswith("/min"):
        return min(v for v, _ in finite)
    if key.endswith("/max"):
        return max(v for v, _ in finite)
    total = sum(w for _, w in finite)
    return sum(v * w for v, w in finite) / total if total > 0 else math.nan
