"""A first look at the shapes world through a Janus checkpoint.

For one prompt per GenEval category: the ground-truth render, its VQ round trip through the
checkpoint's tokenizer, and an image the checkpoint itself generates with transformers'
`generate(generation_mode="image")` — each judged by the verifier. Writes `demo.png` (rows:
render, VQ round trip, generated) and `summary.json`, and prints a table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from coevolve.data.shapes import TAGS, sample_example, verify
from coevolve.model.images import decode_images, encode_images, load_janus
from coevolve.utils.fs import atomic_write_text


@torch.no_grad()
def generate_images(model, processor, prompts: list[str], guidance_scale: float, seed: int) -> list[Image.Image]:
    """Images sampled by transformers' own Janus image generation, one per prompt."""
    messages = [[{"role": "user", "content": [{"type": "text", "text": p}]}] for p in prompts]
    texts = [processor.apply_chat_template(m, add_generation_prompt=True) for m in messages]
    inputs = processor(text=texts, generation_mode="image", padding=True, return_tensors="pt")
    torch.manual_seed(seed)
    tokens = model.generate(
        **inputs, generation_mode="image", do_sample=True, guidance_scale=guidance_scale
    )
    return decode_images(model, processor, tokens)


def run_demo(model_path: str, out: str | Path, seed: int = 0, guidance_scale: float = 5.0) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, processor = load_janus(model_path)
    examples = [sample_example(seed * 100 + i, tag) for i, tag in enumerate(TAGS)]
    renders = [ex.render() for ex in examples]
    round_trips = decode_images(model, processor, encode_images(model, processor, renders))
    generated = generate_images(model, processor, [ex.prompt for ex in examples], guidance_scale, seed)

    rows = []
    for ex, render, rt, gen in zip(examples, renders, round_trips, generated):
        rows.append({
            "tag": ex.tag,
            "prompt": ex.prompt,
            "render": verify(render, ex.metadata).correct,
            "vq_round_trip": verify(rt, ex.metadata).correct,
            "generated": verify(gen, ex.metadata).correct,
        })
    grid = np.concatenate(
        [np.concatenate([np.asarray(im) for im in row], axis=1) for row in (renders, round_trips, generated)],
        axis=0,
    )
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out / "demo.png")
    summary = {"model": str(model_path), "guidance_scale": guidance_scale, "seed": seed, "examples": rows}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")  # written last: the demo is complete

    print(f"{'category':<15} {'render':>7} {'VQ trip':>8} {'generated':>10}  prompt")
    for row in rows:
        marks = ["yes" if row[k] else "no" for k in ("render", "vq_round_trip", "generated")]
        print(f"{row['tag']:<15} {marks[0]:>7} {marks[1]:>8} {marks[2]:>10}  {row['prompt']}")
    print(f"images: {out / 'demo.png'} (rows: render, VQ round trip, generated)\nsummary: {out / 'summary.json'}")
    return summary
