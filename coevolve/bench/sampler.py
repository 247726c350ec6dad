"""`coevolve bench sampler`: our image sampler vs transformers' `generate(generation_mode="image")`.

Both run on the same model, prompts, batch, guidance and greedy decoding, alternating, after a
warm-up of each; the figure is images/s from the median of `repeats` runs, and the ratio is
measured side by side in the same process. Cases:

- `tiny`: the tiny checkpoint (`--model`), 8 shapes prompts of different lengths (padding);
- `mid`: a random-weight Janus with a ~60M-parameter trunk, 256 image tokens, 8 prompts;
- `rollout`: the mid trunk in a shapes-world rollout's shape — 64-token images (the world's
  64x64 px geometry), 2 prompts whose prompt + plan are 80 and 120 tokens, 8 images each
  (transformers prefills every copy; we prefill each group once);
- `rollout-256`: the same with the mid model's 256-token images, where the prefix is a smaller
  share of the work;
- with `--device cuda` also `janus-pro-1b`: random weights with Janus-Pro-1B's trunk, generation
  head and image geometry, bf16, rollout shape, with the memory-bandwidth bound of its decode.

Greedy equality with transformers is reported per case (`identical`, and the fraction of equal
tokens). Random-weight models only need a trunk and generation head: their understanding
encoder and VQ decoder are the smallest that load, since image generation never runs them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from transformers import (
    GenerationConfig,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
)

from coevolve.data.shapes.prompts import balanced_examples
from coevolve.model.guidance import Guidance
from coevolve.model.sampler import sample_images
from coevolve.model.sampling import GREEDY
from coevolve.model.segments import Text
from coevolve.model.spec import JanusSpec

# Special ids of the random-weight models (their vocabularies have no tokenizer).
BOS, EOS, PAD, BOI, EOI, IMAGE = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class RandomShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    image_size: int
    patch_size: int
    codebook: int
    vq_embed_dim: int


SHAPES = {
    # ~60M-parameter Llama trunk; 128-px images of 16x16 tokens.
    "mid": RandomShape(640, 1728, 12, 10, 32000, 128, 8, 4096, 8),
    # The same trunk with the shapes world's geometry: 64x64 px, 8x8 = 64 tokens per image.
    "mid-64px": RandomShape(640, 1728, 12, 10, 32000, 64, 8, 4096, 8),
    # Janus-Pro-1B: DeepSeek-LLM-1.5B trunk, 384-px images of 24x24 tokens, 16384 codes.
    "janus-pro-1b": RandomShape(2048, 5632, 24, 16, 102400, 384, 16, 16384, 8),
}


def random_janus(
    shape: RandomShape, dtype: torch.dtype, device: str, seed: int = 0
) -> tuple[JanusForConditionalGeneration, JanusSpec]:
    grid = shape.image_size // shape.patch_size
    downsamplings = (shape.image_size // grid).bit_length() - 1
    text = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=4096,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    vision = JanusVisionConfig(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        projection_dim=shape.hidden,
        depth=2,
        num_image_tokens=grid * grid,
    )
    vq = JanusVQVAEConfig(
        embed_dim=shape.vq_embed_dim,
        num_embeddings=shape.codebook,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1] * downsamplings + [2],
        num_res_blocks=0,
        num_patches=grid,
        projection_dim=shape.hidden,
        image_token_embed_dim=shape.hidden,
        num_hidden_layers=2,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = JanusForConditionalGeneration(
            JanusConfig(
                text_config=text,
                vision_config=vision,
                vq_config=vq,
                image_token_id=IMAGE,
            )
        ).to(dtype)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        generation_kwargs={"boi_token_id": BOI},
    )
    spec = JanusSpec(
        text_vocab_size=shape.vocab,
        codebook_size=shape.codebook,
        num_image_tokens=grid * grid,
        image_size=shape.image_size,
        max_positions=4096,
        bos_id=BOS,
        eos_id=EOS,
        pad_id=PAD,
        boi_id=BOI,
        eoi_id=EOI,
        image_token_id=IMAGE,
    )
    return model, spec


def random_prompts(lengths: list[int], vocab: int, seed: int) -> list[torch.Tensor]:
    """Prompt ids (BOS + random words), one per length."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.cat(
            [
                torch.tensor([BOS]),
                torch.randint(IMAGE + 1, vocab, (length - 1,), generator=generator),
            ]
        )
        for length in lengths
    ]


def _transformers_inputs(prompts: list[torch.Tensor], spec: JanusSpec, device: str) -> dict:
    """Left-padded input_ids ending in <begin_of_image>, as JanusProcessor(generation_mode="image") writes them."""
    rows = [torch.cat([p, torch.tensor([spec.boi_id])]) for p in prompts]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), spec.pad_id)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = row
        attention_mask[i, width - len(row) :] = 1
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def compare(
    model,
    spec: JanusSpec,
    prompts: list[torch.Tensor],
    n: int,
    guidance: float,
    repeats: int,
    device: str,
) -> dict:
    """Time both samplers on the same inputs; report images/s, the ratio and greedy equality."""
    # transformers rejects num_return_sequences > 1 under greedy decoding; its sampling path
    # expands the batch by repeat_interleave, which is what we hand it here.
    inputs = _transformers_inputs([p for p in prompts for _ in range(n)], spec, device)
    sequences = [(Text(p),) for p in prompts]

    def ours():
        return sample_images(model, spec, sequences, n=n, guidance=Guidance(guidance), sampling=GREEDY).codes

    def theirs():
        return model.generate(**inputs, generation_mode="image", guidance_scale=guidance, do_sample=False)

    times = {"coevolve": [], "transformers": []}
    outputs = {}
    for round_ in range(repeats + 1):  # round 0 warms both up
        for name, run in (("coevolve", ours), ("transformers", theirs)):
            _sync(device)
            started = time.perf_counter()
            outputs[name] = run()
            _sync(device)
            if round_:
                times[name].append(time.perf_counter() - started)
    images = len(prompts) * n
    rate = {name: images / statistics.median(t) for name, t in times.items()}
    # Trunk token-forwards each sampler does (both prefill padded rows): the speedup that sharing
    # the prefix alone can buy when every token-forward costs the same.
    branches = 2 if guidance > 1 else 1
    width = max(len(p) for p in prompts) + 1  # + <begin_of_image>
    decode = branches * images * (spec.num_image_tokens - 1)
    forwards = {
        "coevolve": branches * len(prompts) * width + decode,
        "transformers": branches * images * width + decode,
    }
    equal = outputs["coevolve"] == outputs["transformers"]
    return {
        "prompts": len(prompts),
        "images_per_prompt": n,
        "prompt_tokens": [len(p) for p in prompts],
        "image_tokens": spec.num_image_tokens,
        "guidance": guidance,
        "images_per_s": {name: round(r, 3) for name, r in rate.items()},
        "speedup": round(rate["coevolve"] / rate["transformers"], 2),
        "token_forwards": forwards,
        "speedup_from_token_forwards_alone": round(forwards["transformers"] / forwards["coevolve"], 2),
        "greedy_identical": bool(equal.all()),
        "greedy_equal_token_fraction": round(equal.float().mean().item(), 5),
        "seconds": {name: [round(x, 3) for x in t] for name, t in times.items()},
    }


def decode_bandwidth_bound(model, spec: JanusSpec, rows: int, prefix: int, bandwidth: float) -> dict:
    """Lower bound on decode time from memory traffic alone: every step reads the trunk, the
    generation head/embeddings/aligner and the KV cache of all rows once."""
    text = model.config.text_config
    element = next(model.parameters()).element_size()
    weights = sum(p.numel() for p in model.model.language_model.parameters())
    weights += sum(
        p.numel() for m in (model.model.generation_head, model.model.generation_aligner) for p in m.parameters()
    )
    kv_per_position = (
        2 * text.num_hidden_layers * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)
    )
    seconds = 0.0
    for step in range(spec.num_image_tokens):
        seconds += (weights + rows * (prefix + step) * kv_per_position) * element / bandwidth
    return {"bytes_per_s": bandwidth, "decode_seconds_lower_bound": seconds}


def measured_copy_bandwidth(device: str, gib: float = 2.0) -> float:
    """Device memory bandwidth from a large copy (read + write), bytes/s."""
    x = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    _sync(device)
    started = time.perf_counter()
    for _ in range(5):
        y.copy_(x)
    _sync(device)
    return 2 * x.numel() * 5 / (time.perf_counter() - started)


def _plan_prompts(adapter, lengths: tuple[int, ...] = (80, 120)) -> list[torch.Tensor]:
    """Shapes prompts followed by a plan, cut to `lengths` tokens: the context of a rollout's image.
    (The world's own plans are short, so a plan here is several scenes' plans in a row.)"""
    examples = iter(balanced_examples(400, seed=0))
    prompts = []
    for length in lengths:
        ids = torch.cat([s.ids for s in adapter.image_prompt(next(examples).prompt)])
        while len(ids) < length:
            ids = torch.cat([ids, adapter.text(" " + next(examples).plan).ids])
        prompts.append(ids[:length])
    return prompts


CASES = ("tiny", "tiny-rollout", "mid", "rollout", "rollout-256", "janus-pro-1b")


def sampler_report(
    tiny_model_dir: str | None,
    device: str = "cpu",
    repeats: int = 3,
    guidance: float = 5.0,
    cases: tuple[str, ...] = CASES,
) -> dict:
    """Run the named cases. `tiny*` need the tiny checkpoint; `janus-pro-1b` runs only on CUDA
    (on CPU it is listed under `skipped` with the reason, never silently dropped)."""
    from coevolve.model.adapter import JanusAdapter

    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise ValueError(f"unknown sampler bench case(s) {unknown}; known: {list(CASES)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    report = {
        "device": device,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "guidance": guidance,
        "cases": {},
        "skipped": {},
    }
    if {"tiny", "tiny-rollout"} & set(cases):
        if tiny_model_dir is None:
            raise ValueError("the tiny sampler cases need --model DIR (a `coevolve bootstrap tiny` output)")
        adapter = JanusAdapter.from_pretrained(tiny_model_dir, device=device)
        if "tiny" in cases:
            examples = balanced_examples(8, seed=0)
            prompts = [torch.cat([s.ids for s in adapter.image_prompt(e.prompt)]) for e in examples]
            report["cases"]["tiny"] = compare(adapter.model, adapter.spec, prompts, 1, guidance, repeats, device)
        if "tiny-rollout" in cases:
            report["cases"]["tiny-rollout"] = compare(
                adapter.model,
                adapter.spec,
                _plan_prompts(adapter),
                8,
                guidance,
                repeats,
                device,
            )
    rollout_prompts = random_prompts([80, 120], SHAPES["mid"].vocab, 1)
    if {"mid", "rollout-256"} & set(cases):
        model, spec = random_janus(SHAPES["mid"], torch.float32, device)
        report["trunk_parameters"] = {"mid": _trunk_parameters(model)}
        if "mid" in cases:
            prompts = random_prompts([12, 18, 24, 30, 16, 20, 28, 36], spec.text_vocab_size, 0)
            report["cases"]["mid"] = compare(model, spec, prompts, 1, guidance, repeats, device)
        if "rollout-256" in cases:
            report["cases"]["rollout-256"] = compare(model, spec, rollout_prompts, 8, guidance, repeats, device)
        del model
    if "rollout" in cases:
        model, spec = random_janus(SHAPES["mid-64px"], torch.float32, device)
        report["cases"]["rollout"] = compare(model, spec, rollout_prompts, 8, guidance, repeats, device)
        del model
    if "janus-pro-1b" in cases:
        if not device.startswith("cuda"):
            report["skipped"]["janus-pro-1b"] = "needs --device cuda (bf16, ~1.6B parameters)"
        else:
            model, spec = random_janus(SHAPES["janus-pro-1b"], torch.bfloat16, device)
            report.setdefault("trunk_parameters", {})["janus-pro-1b"] = _trunk_parameters(model)
            case = compare(
                model,
                spec,
                random_prompts([80, 120], spec.text_vocab_size, 2),
                8,
                guidance,
                repeats,
                device,
            )
            rows = 2 * 2 * 8  # prompts x (conditional, unconditional) x images per prompt
            bound = decode_bandwidth_bound(
                model,
                spec,
                rows=rows,
                prefix=121,
                bandwidth=measured_copy_bandwidth(device),
            )
            case["bandwidth_bound"] = {
                **bound,
                "images_per_s_upper_bound": round(16 / bound["decode_seconds_lower_bound"], 3),
            }
            report["cases"]["janus-pro-1b"] = case
    return report


def _trunk_parameters(model) -> int:
    return sum(p.numel() for p in model.model.language_model.parameters())
