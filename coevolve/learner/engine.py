"""The learner's training engine (DESIGN.md section 6): one interface over two backends.

- "plain": torch AdamW, a transformers scheduler and `clip_grad_norm_`, in this process;
- "deepspeed": a DeepSpeed engine with ZeRO stage 0-3 over the same torch AdamW (no compiled
  DeepSpeed op is needed, so it runs on CPU too), gradient clipping in its config, bf16 when the
  model is bf16.

A training forward pass runs through the engine: `engine.forward(fn, ...)` calls `fn(engine.module, ...)`
(e.g. a GRPO loss over `coevolve.model.scoring.score` of the Janus model), `engine(**inputs)` calls
the module. The caller then calls `backward(loss)` once per micro-batch — as many times per
optimizer step as it likes, each loss already scaled so that their sum is the step's loss — then
`step()`. DeepSpeed's own gradient-accumulation counter is not used: the engine runs with
`managed_gradient_accumulation: false` and `gradient_accumulation_steps: 1`, so each backward only
accumulates (no 1/GAS scaling, no reduction at a guessed boundary) and `step()` is the boundary.

Two ZeRO-3 defects of DeepSpeed (0.19) are worked around here: a parameter that gets no gradient
in a step kept its previous step's gradient (its partition is overwritten, never cleared), and
micro-batches are counted in the engine's forward, so a backward after a forward run on the module
directly overwrote the gradients accumulated so far. A third needs `forward`: see there.

The VQ tokenizer is frozen (it defines the image vocabulary). With LoRA the trunk is wrapped by
PEFT exactly as SFT wraps it; `reference()` is then the KL reference policy (the adapter disabled).
`policy_state_dict()` is always what rollout workers load into a plain
`JanusForConditionalGeneration`: the LoRA deltas merged (without touching the module), ZeRO-3
partitions gathered. `save_state`/`load_state` resume exactly.

Every trainable parameter is stepped every step: one the loss did not reach gets a zero gradient
(its Adam moments still move it), as ZeRO's flat partitions do, so that the backends agree.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import JanusForConditionalGeneration, SchedulerType, get_scheduler
from transformers.trainer_pt_utils import get_parameter_names

from coevolve.utils.fs import atomic_output_dir

if TYPE_CHECKING:  # annotations only: the config schema imports the RL config, which imports the learner
    from coevolve.config.lora import LoraConfig
    from coevolve.config.schema import EngineConfig

ADAPTER = "default"  # PEFT's name for the one adapter
STATE_TAG = "state"  # DeepSpeed checkpoint tag under a save_state directory
PLAIN_STATE = "state.pt"
# The Trainer's rule (`Trainer.get_decay_parameter_names`): no weight decay on biases and norms.
NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


@dataclass
class OptimConfig:
    """AdamW and its schedule; the values come from the RL config."""

    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0  # <= 0: no clipping (the norm is still reported)
    lr_scheduler: str = "constant"  # any transformers SchedulerType name
    warmup_steps: int = 0
    total_steps: int = 1  # optimizer steps of the run (for the schedule)

    def __post_init__(self) -> None:
        names = [t.value for t in SchedulerType]
        if self.lr_scheduler not in names:
            raise ValueError(f"lr_scheduler must be one of {names}, got {self.lr_scheduler!r}")
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ValueError(
                f"need warmup_steps >= 0 and total_steps >= 1, got {self.warmup_steps}, {self.total_steps}"
            )


def lora_peft_config(lora: LoraConfig):
    """The PEFT config of `lora`, shared by SFT and RL: only the language model's projections are
    adapted; the VQ tokenizer and the vision encoder keep theirs."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        exclude_modules=r".*(vqmodel|vision_model).*",
    )


def deepspeed_engine_config(zero_stage: int, max_grad_norm: float, bf16: bool, clip_in_engine: bool) -> dict:
    """DeepSpeed's config for a caller-driven accumulation: `step()` is the boundary (see the module doc).
    `clip_in_engine` False: the engine computes (and clips by) the norm itself (ZeRO-0 in fp32, where
    DeepSpeed clips but does not report the norm)."""
    zero: dict = {"stage": zero_stage}
    if zero_stage == 3:
        # policy_state_dict gathers the partitions itself; nothing is saved through DeepSpeed's 16-bit path.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    return {
        "train_micro_batch_size_per_gpu": 1,  # unused: the engine never sees batches
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": max(max_grad_norm, 0.0) if clip_in_engine else math.inf,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # torch AdamW: no DeepSpeed compiled optimizer
        "bf16": {"enabled": bf16},
        "wall_clock_breakdown": False,
    }


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _is_lora_layer(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Forward(nn.Module):
    """What DeepSpeed wraps: one forward pass is `fn(policy, *args, **kwargs)`, whatever `fn` does with
    the policy's submodules (e.g. `score` over the Janus trunk and heads). Through the DeepSpeed engine
    its hooks see one top-level forward, as ZeRO-3 needs (see `TrainEngine.forward`)."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, fn, args: tuple = (), kwargs: dict | None = None):
        return fn(self.policy, *args, **(kwargs or {}))


def _call(module: nn.Module, *args, **kwargs):
    return module(*args, **kwargs)


def build_engine(
    model: JanusForConditionalGeneration,
    engine: EngineConfig,
    optim: OptimConfig,
    lora: LoraConfig | None,
    gradient_checkpointing: bool = False,
    deepspeed_config: dict | None = None,
    seed: int = 0,
) -> TrainEngine:
    """Wrap `model` for training. `model` is modified in place (frozen VQ, LoRA layers injected,
    DeepSpeed's flat or partitioned parameters): keep a copy if the original is needed.
    `deepspeed_config`: entries merged over the generated DeepSpeed config (deepspeed only).
    `seed`: initialises the LoRA matrices (the same on every rank), leaving the global RNG as it was."""
    return TrainEngine(model, engine, optim, lora, gradient_checkpointing, deepspeed_config, seed)


class TrainEngine:
    """See the module doc. Build with `build_engine`."""

    def __init__(
        self,
        model: JanusForConditionalGeneration,
        engine: EngineConfig,
        optim: OptimConfig,
        lora: LoraConfig | None,
        gradient_checkpointing: bool = False,
        deepspeed_config: dict | None = None,
        seed: int = 0,
    ):
        if engine.name != "deepspeed" and deepspeed_config:
            raise ValueError("deepspeed_config is for engine.name == 'deepspeed'")
        self.engine_config, self.optim_config, self.lora_config = engine, optim, lora
        self._janus = model
        self._plain_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        self._dtype = model.dtype
        self.global_step = 0  # optimizer steps taken (restored by load_state)

        # The VQ tokenizer defines the image vocabulary: training it would move every code.
        model.model.vqmodel.requires_grad_(False)
        if gradient_checkpointing:
            # Non-reentrant: no input needs requires_grad, frozen (LoRA) trunks included.
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        module: nn.Module = model
        self._peft = None
        if lora is not None:
            from peft import get_peft_model

            device = next(model.parameters()).device
            cuda = [device.index or 0] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)
                module = self._peft = get_peft_model(model, lora_peft_config(lora))
        self._trainable = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        if not self._trainable:
            raise ValueError("nothing to train: no parameter requires grad")
        self._optimizer = torch.optim.AdamW(
            self._param_groups(module, optim.weight_decay),
            lr=optim.learning_rate,
            betas=(optim.adam_beta1, optim.adam_beta2),
            eps=optim.adam_epsilon,
            weight_decay=optim.weight_decay,
        )
        self._scheduler = get_scheduler(
            optim.lr_scheduler,
            self._optimizer,
            num_warmup_steps=optim.warmup_steps,
            num_training_steps=optim.total_steps,
        )
        self._ds = None
        self._own_clip = False  # DeepSpeed ZeRO-0 in fp32: the engine clips (see _init_deepspeed)
        self._grad_norm: float | None = None
        self._module = module
        if engine.name == "deepspeed":
            self._init_deepspeed(engine.zero_stage, deepspeed_config or {})
        self._device = next(model.parameters()).device

    def _param_groups(self, module: nn.Module, weight_decay: float) -> list[dict]:
        decay = set(get_parameter_names(module, [nn.LayerNorm], NO_DECAY_PATTERNS))
        groups = [
            {"params": [p for n, p in self._trainable if n in decay], "weight_decay": weight_decay},
            {"params": [p for n, p in self._trainable if n not in decay], "weight_decay": 0.0},
        ]
        # DeepSpeed drops empty groups; drop them first, so the scheduler sees the same groups.
        return [group for group in groups if group["params"]]

    def _init_deepspeed(self, zero_stage: int, extra: dict) -> None:
        from coevolve.utils.distributed import single_process_distributed_env

        single_process_distributed_env()
        import deepspeed

        bf16 = self._dtype == torch.bfloat16
        # ZeRO-0 in fp32 steps the torch optimizer itself: DeepSpeed clips there without reporting
        # the norm, so the engine clips (as the plain backend does) and records the norm.
        self._own_clip = zero_stage == 0 and not bf16
        max_norm = self.optim_config.max_grad_norm
        config = _merge(deepspeed_engine_config(zero_stage, max_norm, bf16, clip_in_engine=not self._own_clip), extra)
        ds, _, _, _ = deepspeed.initialize(
            model=_Forward(self._module), optimizer=self._optimizer, lr_scheduler=self._scheduler, config=config
        )
        if self._own_clip:
            if ds.optimizer is not self._optimizer:
                raise RuntimeError(f"DeepSpeed wrapped the ZeRO-0 optimizer ({type(ds.optimizer).__name__})")
            ds.clip_fp32_gradients = self._clip  # called by DeepSpeed after the reduction, before the step
        self._ds = ds

    # ---- the model -------------------------------------------------------------------------

    @property
    def module(self) -> nn.Module:
        """The policy: the PEFT model with LoRA, else the Janus model. Training forward passes go
        through `forward` / `__call__` (under ZeRO-3 they must)."""
        return self._module

    def forward(self, fn, *args, **kwargs):
        """`fn(module, *args, **kwargs)` as one forward pass of the engine; returns what `fn` returns
        (a tensor, or tuples / lists / dicts of them). With DeepSpeed it runs inside the engine's forward,
        so that ZeRO-3 sees a top-level forward: its backward hooks then start at the output, which
        keeps the frozen (LoRA base) weights gathered while a checkpointed block (`score`'s head chunks,
        activation checkpointing) is recomputed in the backward pass. Called directly on `module`'s
        submodules, ZeRO-3 releases them first and the recomputation fails."""
        if self._ds is None:
            return fn(self._module, *args, **kwargs)
        return self._ds(fn=fn, args=args, kwargs=kwargs)

    def __call__(self, *args, **kwargs):
        """`module(*args, **kwargs)` as a forward pass of the engine (see `forward`)."""
        return self.forward(_call, *args, **kwargs)

    @property
    def janus(self) -> JanusForConditionalGeneration:
        """The `JanusForConditionalGeneration` (with LoRA: its layers injected, the adapter active)."""
        return self._janus

    @property
    def has_adapter(self) -> bool:
        return self._peft is not None

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def learning_rate(self) -> float:
        """The learning rate the next step applies."""
        return float(self._optimizer.param_groups[0]["lr"])

    @contextlib.contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The KL reference policy (LoRA only): inside, `forward`, `module` and `janus` run with the
        adapter disabled."""
        if self._peft is None:
            raise RuntimeError("no LoRA adapter to disable: the reference policy is a frozen copy (frozen_copy())")
        with self._peft.disable_adapter():
            yield self._module

    def frozen_copy(self) -> JanusForConditionalGeneration:
        """A detached eval-mode copy of the current policy (merged, gathered) on `device`, no
        parameter requiring grad: the reference policy without LoRA, when taken before the first step."""
        copy = JanusForConditionalGeneration.from_pretrained(
            None, config=self._janus.config, state_dict=self.policy_state_dict(), dtype=self._dtype
        )
        copy.requires_grad_(False)
        return copy.to(self._device).eval()

    # ---- training --------------------------------------------------------------------------

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradients of one micro-batch's loss (already scaled by the caller)."""
        if self._ds is None:
            loss.backward()
            return
        # What DeepSpeed's engine.forward does first (a no-op if the forward ran through `forward`), for
        # a forward run on the module directly: ZeRO-3 counts micro-batches there, and without it each
        # backward would overwrite the gradients accumulated so far instead of adding to them.
        if hasattr(self._ds.optimizer, "clear_backward_seen_flag"):
            self._ds.optimizer.clear_backward_seen_flag()
        self._ds.backward(loss)

    def _zero_fill(self) -> None:
        for _, p in self._trainable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def _clip(self) -> None:
        params = [p for _, p in self._trainable]
        self._zero_fill()
        max_norm = self.optim_config.max_grad_norm
        if max_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        self._grad_norm = float(norm)

    def step(self) -> dict:
        """One optimizer step over the accumulated gradients: clip, step, schedule, zero the gradients.
        Returns the gradient norm before clipping and the learning rate this step applied."""
        learning_rate = self.learning_rate
        self._grad_norm = None
        if self._ds is None:
            self._clip()
            self._optimizer.step()
            self._scheduler.step()
            self._optimizer.zero_grad(set_to_none=True)
        else:
            self._ds.step()
            # ZeRO-3 overwrites a parameter's gradient partition at its first backward of a step,
            # and leaves it as it was when the parameter gets no gradient: the next step would reuse
            # the last step's gradient (e.g. of the vision encoder after a batch without images).
            stale = getattr(self._ds.optimizer, "grad_partitions_flat_buffer", None)
            if self.engine_config.zero_stage == 3 and stale is not None:
                stale.zero_()
            if not self._own_clip:
                norm = self._ds.get_global_grad_norm()
                self._grad_norm = math.nan if norm is None else float(norm)
        self.global_step += 1
        return {"grad_norm": self._grad_norm, "learning_rate": learning_rate}

    # ---- weights ---------------------------------------------------------------------------

    def _gathered(self, params: list[nn.Parameter]):
        """ZeRO-3: the full parameters inside the block (read-only); otherwise nothing to do."""
        partitioned = [p for p in params if hasattr(p, "ds_id")]
        if not partitioned:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)

    @torch.no_grad()
    def policy_state_dict(self, views: bool = False) -> dict[str, torch.Tensor]:
        """The policy's full weights with the keys and shapes of a plain `JanusForConditionalGeneration`
        state dict: CPU clones; LoRA deltas added to the base weights without touching the module;
        ZeRO-3 partitions gathered (a collective: every rank calls it). Tied weights stay one tensor.
        `views`: when the module holds the weights whole (no LoRA, not ZeRO-3), its own tensors,
        detached, on its device and not copied — to be read at once (a weight broadcast), never kept."""
        janus = self._janus
        if views and self._peft is None and not any(hasattr(p, "ds_id") for p in janus.parameters()):
            return {key: value.detach() for key, value in janus.state_dict().items()}
        lora_layers = {name: m for name, m in janus.named_modules() if self._peft is not None and _is_lora_layer(m)}
        entries = janus.state_dict(keep_vars=True)
        # Group the keys by owner: a LoRA layer (its base layer and adapter) or the module holding them.
        groups: dict[str, list[str]] = {}
        for key in entries:
            owner = key.rpartition(".")[0]
            parts = owner.split(".")
            for i in range(len(parts), 0, -1):
                if ".".join(parts[:i]) in lora_layers:
                    owner = ".".join(parts[:i])
                    break
            groups.setdefault(owner, []).append(key)
        out: dict[str, torch.Tensor] = {}
        copies: dict[int, torch.Tensor] = {}  # id(parameter) -> its copy, so tied weights stay tied

        def copy(tensor: torch.Tensor) -> torch.Tensor:
            if id(tensor) not in copies:
                copies[id(tensor)] = tensor.detach().to("cpu", copy=True)
            return copies[id(tensor)]

        for owner, keys in groups.items():
            if owner in lora_layers:
                layer = lora_layers[owner]
                if layer.merged or getattr(layer, "use_dora", {}).get(ADAPTER, False):
                    raise RuntimeError(f"{owner}: a merged or DoRA LoRA layer is not supported")
                base = layer.get_base_layer()
                with self._gathered(list(layer.parameters())):
                    for name, tensor in base.state_dict(keep_vars=True).items():
                        if name == "weight":
                            merged = tensor.detach() + layer.get_delta_weight(ADAPTER)
                            out[f"{owner}.weight"] = merged.to("cpu", copy=True)
                        else:
                            out[f"{owner}.{name}"] = copy(tensor)
            else:
                tensors = [entries[key] for key in keys]
                with self._gathered([t for t in tensors if isinstance(t, nn.Parameter)]):
                    for key, tensor in zip(keys, tensors):
                        out[key] = copy(tensor)
        shapes = {key: tuple(value.shape) for key, value in out.items()}
        if shapes != self._plain_shapes:
            raise RuntimeError(
                "policy state dict does not match the plain model's: "
                f"missing {sorted(set(self._plain_shapes) - set(shapes))[:5]}, "
                f"extra {sorted(set(shapes) - set(self._plain_shapes))[:5]}, "
                f"shape {[k for k in shapes if k in self._plain_shapes and shapes[k] != self._plain_shapes[k]][:5]}"
            )
        return out

    def save_pretrained(self, path: str | os.PathLike, processor=None, overwrite: bool = True) -> Path:
        """The merged policy as a Hugging Face checkpoint (plus `processor`), loadable by plain
        `JanusForConditionalGeneration.from_pretrained`; the directory appears only once complete.
        Every rank calls it (ZeRO-3 gathers); rank 0 writes."""
        state = self.policy_state_dict()
        path = Path(path)
        if _rank() == 0:
            with atomic_output_dir(path, overwrite=overwrite) as staging:
                self._janus.save_pretrained(staging, state_dict=state)
                if processor is not None:
                    processor.save_pretrained(staging)
        _barrier()
        return path

    # ---- resumable state -------------------------------------------------------------------

    def _trainable_names(self) -> list[str]:
        return [name for name, _ in self._trainable]

    def save_state(self, path: str | os.PathLike) -> Path:
        """Everything a resume needs (trainable weights, LoRA adapter included; optimizer; scheduler;
        step counter; torch RNG) in directory `path`, replaced only once complete. Frozen weights are
        not saved: load into an engine built the same way from the same model."""
        path = Path(path)
        meta = {"global_step": self.global_step, "rng": _rng_state(), "trainable": self._trainable_names()}
        if self._ds is None:
            with atomic_output_dir(path, overwrite=True) as staging:
                state = {
                    **meta,
                    "weights": {name: p.detach().cpu() for name, p in self._trainable},
                    "optimizer": self._optimizer.state_dict(),
                    "scheduler": self._scheduler.state_dict(),
                }
                torch.save(state, staging / PLAIN_STATE)
            return path
        # DeepSpeed: every rank writes its shards into one staging directory, renamed by rank 0.
        staging = path.parent / f".{path.name}.partial"
        if _rank() == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        _barrier()
        self._ds.save_checkpoint(
            str(staging), tag=STATE_TAG, client_state=meta, save_latest=False, exclude_frozen_parameters=True
        )
        _barrier()
        if _rank() == 0:
            if path.exists():
                retired = path.parent / f".{path.name}.old"
                shutil.rmtree(retired, ignore_errors=True)
                os.replace(path, retired)
                os.replace(staging, path)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(staging, path)
        _barrier()
        return path

    def load_state(self, path: str | os.PathLike) -> None:
        """Restore a `save_state` directory into this engine (built as the saving one was)."""
        path = Path(path)
        if self._ds is None:
            state = torch.load(path / PLAIN_STATE, map_location="cpu", weights_only=False)
            self._check_trainable(state["trainable"], path)
            with torch.no_grad():
                for name, p in self._trainable:
                    p.copy_(state["weights"][name])
            self._optimizer.load_state_dict(state["optimizer"])
            self._scheduler.load_state_dict(state["scheduler"])
        else:
            # Frozen weights were not saved (they are the model's own), hence not strict.
            loaded, state = self._ds.load_checkpoint(
                str(path),
                tag=STATE_TAG,
                load_module_strict=False,
                load_optimizer_states=True,
                load_lr_scheduler_states=True,
            )
            if loaded is None:
                raise FileNotFoundError(f"no DeepSpeed state under {path}")
            self._check_trainable(state["trainable"], path)
        self.global_step = state["global_step"]
        _set_rng_state(state["rng"])

    def _check_trainable(self, saved: list[str], path: Path) -> None:
        if saved != self._trainable_names():
            raise ValueError(f"{path}: saved by an engine training other parameters (LoRA or not, another model?)")
