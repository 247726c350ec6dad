"""Can UAE's reconstruction reward pay a caption for naming every object? Ask the redrawing generator.

    python benchmarks/redraw_probe.py --model runs/shapes/checkpoints/sft --draws 4

On the eval's caption renders (`coevolve eval`'s seed 2 set) that hold two or more objects, each
render is redrawn `--draws` times from its true caption and as often from the caption of its
first object alone, with the RL recipe's sampling (CFG 3, temperature 1), and every redraw is
compared with the render by the reconstruction reward's `shapes` similarity. A generator that
keeps what the caption says scores the full caption clearly higher; if both score alike, the
reward cannot tell a complete caption from one that drops objects, and "generation for
understanding" has nothing that keeps captions complete.

Nothing is saved: the checkpoint is only read.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from coevolve.data.shapes import TAGS, derive_seed, sample_example
from coevolve.data.shapes.describe import caption
from coevolve.data.shapes.scene import Scene, render
from coevolve.model import JanusAdapter
from coevolve.model.guidance import Guidance
from coevolve.model.sampling import Sampling
from rewards.similarity import ShapesSimilarity

CAPTION_SEED = 2  # the eval's caption renders: derive_seed(eval.seed + 2, i) with eval.seed 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Janus checkpoint directory")
    parser.add_argument("--renders", type=int, default=60, help="caption renders looked at (multi-object ones kept)")
    parser.add_argument("--draws", type=int, default=4, help="redraws per caption")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    torch.manual_seed(0)
    adapter = JanusAdapter.from_pretrained(args.model)
    scenes = [sample_example(derive_seed(CAPTION_SEED, i), TAGS[i % len(TAGS)]).scene for i in range(args.renders)]
    scenes = [scene for scene in scenes if len(scene.objects) >= 2]
    if not scenes:
        raise SystemExit(f"none of the first {args.renders} caption renders holds two objects; raise --renders")
    captions = {"full": [caption(s) for s in scenes], "first object": [caption(Scene(s.objects[:1])) for s in scenes]}
    print(f"{len(scenes)} renders with 2+ objects; e.g. {captions['full'][0]!r} vs {captions['first object'][0]!r}")

    similarity = ShapesSimilarity()
    sources = [render(scene) for scene in scenes for _ in range(args.draws)]
    generator = torch.Generator().manual_seed(0)
    scores = {}
    for name, texts in captions.items():
        prompts = [adapter.image_prompt(text) for text in texts for _ in range(args.draws)]
        images = []
        for start in range(0, len(prompts), args.batch):
            drawn = adapter.sample_images(
                prompts[start : start + args.batch], guidance=Guidance(args.guidance), sampling=Sampling(1.0),
                generator=generator,
            )
            images += adapter.decode(drawn.codes.cpu())
        scores[name] = np.array(similarity(sources, images)).reshape(len(scenes), args.draws)
    full, first = scores["full"], scores["first object"]
    print(f"mean shapes similarity: full caption {full.mean():.3f}, first object only {first.mean():.3f}")
    print(
        f"renders whose full caption redraws better (mean of {args.draws}): {(full.mean(1) > first.mean(1)).mean():.2f}; "
        f"single draws: {(full[:, 0] > first[:, 0]).mean():.2f}"
    )


if __name__ == "__main__":
    main()
