"""`coevolve bench learner`: the learner's training throughput and model FLOPs utilisation (MFU).

One optimiser step of the RL learner's shape of work on a random-weight Janus: a batch of
`batch` trajectories, each a prompt, a scored plan and a scored image (`GenImage`), scored by
`coevolve.model.scoring.score` in `guided` mode (an unconditional row per image, as the learner
does), the loss back-propagated and AdamW stepped through the learner's engine (`build_engine`,
plain backend, full fine-tuning, the VQ tokenizer frozen). One warm-up step, then `repeats` timed
steps; figures from the median step.

- `tokens_per_s`: trunk tokens (real positions of every row, conditional and unconditional)
  per second; `trained_tokens_per_s`: the scored plan and image tokens per second.
- `model_flops_per_step` (analytic, what MFU is based on): 6 x the trunk's matmul parameters per
  trunk token, plus causal attention 6 x layers x hidden x sum over sequences of length², plus
  6 x the head's parameters per scored position (the LM head for plan tokens, the generation head
  for each image token's conditional and unconditional position) and the generation aligner per
  image position. `counted_flops_per_step`, a cross-check: what torch's `FlopCounterMode` counts
  in one step — it includes the recomputed head chunks (`score` checkpoints them) and misses the
  attention kernels it has no formula for (on CPU it sees the matmuls only).
- `mfu`: model FLOPs per second / the device's peak. The peak is `--peak-tflops` when given, else
  the bf16 dense tensor-core peak of the GPU named by `torch.cuda.get_device_name()` in
  `PEAK_BF16_TFLOPS` (only for a bfloat16 model); on CPU there is none and `mfu` is null.

Shapes: `small` (a 2-layer, 128-wide trunk, 64 tokens per image: seconds on CPU, the default
there), `mid` (bench/sampler.py's 60M trunk) and `janus-pro-1b` (Janus-Pro-1B's trunk, heads
and 576-token images in bfloat16: the default on cuda).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from coevolve.bench.sampler import SHAPES, RandomShape, random_janus, random_prompts
from coevolve.config.schema import EngineConfig
from coevolve.learner.engine import OptimConfig, build_engine
from coevolve.model.guidance import CFGMode, Guidance
from coevolve.model.packing import pack
from coevolve.model.sampling import Sampling
from coevolve.model.scoring import score
from coevolve.model.segments import GenImage, Text

LEARNER_SHAPES = {
    "small": RandomShape(128, 344, 2, 4, 1024, 64, 8, 512, 8),
    "mid": SHAPES["mid"],
    "janus-pro-1b": SHAPES["janus-pro-1b"],
}

PEAK_BF16_TFLOPS = (
    # (substring of torch.cuda.get_device_name(), dense bf16 tensor-core peak in TFLOP/s), most specific first
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_tflops(device: str, dtype: torch.dtype, given: float | None) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it came from)."""
    if given is not None:
        return given, "--peak-tflops"
    if not device.startswith("cuda"):
        return None, "no peak for a CPU: give --peak-tflops"
    name = torch.cuda.get_device_name(torch.device(device))
    if dtype != torch.bfloat16:
        return None, f"the table holds bf16 peaks; the model is {dtype}: give --peak-tflops"
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value, f"bf16 dense peak of {key} ({name})"
    return None, f"{name} is not in the peak table: give --peak-tflops"


def _trajectories(spec, batch: int, prompt_tokens: int, plan_tokens: int, seed: int) -> list[tuple]:
    generator = torch.Generator().manual_seed(seed)
    prompts = random_prompts([prompt_tokens] * batch, spec.text_vocab_size, seed)
    out = []
    for prompt in prompts:
        plan = torch.randint(6, spec.text_vocab_size, (plan_tokens,), generator=generator)
        codes = torch.randint(0, spec.codebook_size, (spec.num_image_tokens,), generator=generator)
        out.append((Text(prompt), Text(plan, scored=True), GenImage(codes)))
    return out


def _matmul_parameters(module: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def model_flops(model, spec, sequences: list[tuple], guidance: Guidance) -> dict:
    """The analytic FLOPs of one training step (forward + backward) on `sequences` (see the module doc)."""
    text = model.config.text_config
    rows = list(sequences) + [guidance.unconditional_prefix(s[:-1], spec) + (s[-1],) for s in sequences]
    lengths = [int(pack([row], spec, "right").attention_mask.sum()) for row in rows]
    trunk_tokens = sum(lengths)
    plan_tokens = sum(len(s[1].ids) for s in sequences)
    image_positions = 2 * sum(s[2].codes.numel() for s in sequences)  # conditional + unconditional
    trunk = 6 * _matmul_parameters(model.model.language_model) * trunk_tokens
    attention = 6 * text.num_hidden_layers * text.hidden_size * sum(n * n for n in lengths)
    heads = 6 * _matmul_parameters(model.lm_head) * plan_tokens
    heads += 6 * _matmul_parameters(model.model.generation_head) * image_positions
    heads += 6 * _matmul_parameters(model.model.generation_aligner) * image_positions
    return {
        "trunk_tokens": trunk_tokens,
        "trained_tokens": plan_tokens + image_positions // 2,
        "flops": trunk + attention + heads,
        "flops_by_part": {"trunk_matmuls": trunk, "attention": attention, "heads": heads},
    }


def _significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def learner_report(
    device: str = "cpu",
    shape: str | None = None,
    batch: int | None = None,
    repeats: int = 3,
    peak: float | None = None,
    prompt_tokens: int | None = None,
    plan_tokens: int | None = None,
    guidance_weight: float = 5.0,
    seed: int = 0,
) -> dict:
    """Time `repeats` learner steps (after one warm-up) and report throughput and MFU (module doc)."""
    cuda = device.startswith("cuda")
    shape = shape or ("janus-pro-1b" if cuda else "small")
    if shape not in LEARNER_SHAPES:
        raise ValueError(f"unknown learner bench shape {shape!r}; known: {list(LEARNER_SHAPES)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    big = shape != "small"
    batch = batch or 4
    prompt_tokens = prompt_tokens or (100 if big else 20)
    plan_tokens = plan_tokens or (64 if big else 16)
    dtype = torch.bfloat16 if cuda else torch.float32
    model, spec = random_janus(LEARNER_SHAPES[shape], dtype, device, seed=seed)
    engine = build_engine(model, EngineConfig("plain"), OptimConfig(learning_rate=1e-6, total_steps=repeats + 2), None)
    guidance = Guidance(guidance_weight)
    sequences = _trajectories(spec, batch, prompt_tokens, plan_tokens, seed)
    figures = model_flops(model, spec, sequences, guidance)

    def step() -> None:
        def loss_of(module):
            scores = score(model, spec, sequences, CFGMode.GUIDED, guidance, Sampling())
            logprobs = torch.cat([lp for row in scores.logprobs for lp in row if lp is not None])
            return -logprobs.mean()

        engine.backward(engine.forward(loss_of))
        engine.step()

    step()  # warm-up
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    seconds = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        step()
        _sync(device)
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    peak_value, peak_source = peak_tflops(device, dtype, peak)
    achieved = figures["flops"] / median
    report = {
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device)) if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "shape": shape,
        "dtype": str(dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trunk_parameters": sum(p.numel() for p in model.model.language_model.parameters()),
        "batch": {
            "trajectories": batch,
            "prompt_tokens": prompt_tokens,
            "plan_tokens": plan_tokens,
            "image_tokens": spec.num_image_tokens,
            "guidance": guidance_weight,
        },
        "trunk_tokens_per_step": figures["trunk_tokens"],
        "trained_tokens_per_step": figures["trained_tokens"],
        "step_seconds": [round(s, 4) for s in seconds],
        "tokens_per_s": round(figures["trunk_tokens"] / median, 1),
        "trained_tokens_per_s": round(figures["trained_tokens"] / median, 1),
        "model_flops_per_step": figures["flops"],
        "model_flops_by_part": figures["flops_by_part"],
        "counted_flops_per_step": int(counter.get_total_flops()),
        # Significant figures, not decimals: on CPU a step reaches a few GFLOP/s, which four
        # decimals of TFLOP/s would cut to one or two digits.
        "achieved_tflops": _significant(achieved / 1e12),
        "peak_tflops": peak_value,
        "peak_source": peak_source,
        "mfu": None if peak_value is None else _significant(achieved / (peak_value * 1e12)),
    }
    if cuda:
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**30, 2)
    return report
