"""Does a checkpoint draw what the words say? Teacher-forced log-probs at an object's first cell.

    python benchmarks/binding_probe.py --model runs/shapes/checkpoints/sft

On seeded single-object renders of the "colors" category, the log-prob of the VQ code at the
object's first cell (raster order: where its shape and colour are decided), then one cell to the
right and one row down (copied from neighbours), with the right plan, with the plan's colour
swapped, and with both prompt and plan swapped. A checkpoint that binds colour words to pixels
scores the right plan clearly higher; one that does not scores all three alike.

The understanding direction on the same renders: the caption's mean log-prob given the right
image and given the render with the object's colour changed, and the self-check's P(yes) on
balanced matching / violating renders of every category (its accuracy at 0.5).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from coevolve.data.shapes import COLOR_NAMES, balanced_examples, derive_seed, sample_example
from coevolve.data.shapes.scene import Scene, render
from coevolve.model.adapter import JanusAdapter
from coevolve.model.guidance import CFGMode
from coevolve.model.images import encode_images
from coevolve.model.packing import pack, trunk
from coevolve.model.scoring import score
from coevolve.model.segments import GenImage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args()

    adapter = JanusAdapter.from_pretrained(args.model)
    adapter.model.eval()
    examples = [sample_example(derive_seed(args.seed, i), "colors") for i in range(args.n)]
    codes = encode_images(adapter.model, adapter.processor, [e.render() for e in examples]).cpu()
    background = int(torch.mode(codes.flatten()).values)

    def other_colour(color: str) -> str:
        return COLOR_NAMES[(COLOR_NAMES.index(color) + 3) % len(COLOR_NAMES)]

    def swapped(text: str, example) -> str:
        color = example.scene.objects[0].color
        return text.replace(color, other_colour(color))

    @torch.no_grad()
    def logprob(prompts: list[str], plans: list[str], offset: int) -> float:
        sequences = [
            adapter.image_prompt(prompt) + (adapter.text(" " + plan), GenImage(c))
            for prompt, plan, c in zip(prompts, plans, codes)
        ]
        packed = pack(sequences, adapter.spec, "right")
        hidden = trunk(adapter.model, packed).last_hidden_state
        values = []
        for i, c in enumerate(codes):
            start, _ = packed.spans[i][-1]
            k = int((c != background).nonzero()[0]) + offset
            logprobs = adapter.model.model.generation_head(hidden[i, start + k - 1]).log_softmax(-1)
            values.append(float(logprobs[c[k]]))
        return sum(values) / len(values)

    prompts, plans = [e.prompt for e in examples], [e.plan for e in examples]
    plans_swapped = [swapped(p, e) for p, e in zip(plans, examples)]
    prompts_swapped = [swapped(p, e) for p, e in zip(prompts, examples)]
    report = {
        cell: {
            "right_plan": logprob(prompts, plans, offset),
            "plan_colour_swapped": logprob(prompts, plans_swapped, offset),
            "prompt_and_plan_swapped": logprob(prompts_swapped, plans_swapped, offset),
        }
        for cell, offset in (("first_cell", 0), ("next_cell", 1), ("cell_below", 8))
    }

    def recoloured(example):
        obj = example.scene.objects[0]
        return render(Scene((dataclasses.replace(obj, color=other_colour(obj.color)),)))

    @torch.no_grad()
    def caption_logprob(images) -> float:
        sequences = [
            adapter.caption_context(image) + (adapter.text(" " + e.caption, scored=True),)
            for image, e in zip(images, examples)
        ]
        scores = score(adapter.model, adapter.spec, sequences, mode=CFGMode.CONDITIONAL)
        return float(torch.cat([lp[-1] for lp in scores.logprobs]).mean())

    report["caption_token_logprob"] = {
        "right_image": caption_logprob([e.render() for e in examples]),
        "colour_changed_image": caption_logprob([recoloured(e) for e in examples]),
    }
    judged = balanced_examples(args.n, args.seed)
    p_yes = adapter.judge([e.render() for e in judged], [e.prompt for e in judged]).p_yes
    truth = torch.tensor([e.satisfies for e in judged])
    report["self_check"] = {
        "p_yes_matching": float(p_yes[truth].mean()),
        "p_yes_violating": float(p_yes[~truth].mean()),
        "accuracy": float(((p_yes > 0.5) == truth).float().mean()),
    }
    print(json.dumps({"model": args.model, "renders": args.n, **report}, indent=2))


if __name__ == "__main__":
    main()
