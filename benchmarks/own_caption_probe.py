"""Does the self-check read the model's own images better once its captions are trained on them?

Draws `--images` first images of the checkpoint (the eval's prompt distribution, seeded apart from
the eval's prompts) and labels each with the caption of what the verifier detects in it (the
world's caption grammar over the detected objects, at most `MAX_OBJECTS`). The captioning turn is
trained on `--train` of them (cross-entropy of the caption tokens, the whole model); every
`--every` steps the held-out rest are described afresh (sampled, as rollouts describe) and it
prints how often the description is true of the image and what an exact comparison over those
descriptions would score against the verifier (`own_reading.comparison_figures`): pooled, and
within a category, where knowing which prompts the generator fails does not help. `--save DIR`
keeps the trained checkpoint (e.g. for `own_judge_probe.py`).

    python benchmarks/own_caption_probe.py --model runs/shapes/checkpoints/sft
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from own_reading import (  # beside this file
    add_probe_arguments,
    check_probe_arguments,
    comparison_figures,
    describing_adapter,
    exact_comparison,
    first_images,
)

from coevolve.data.shapes import TAGS, Scene, ShapeObject, as_verifiable, derive_seed, detect, sample_example, verify
from coevolve.data.shapes.describe import caption, parse_caption
from coevolve.data.shapes.scene import MAX_OBJECTS
from coevolve.model.scoring import score
from coevolve.model.segments import Text
from coevolve.trajectory import DESCRIPTION, IMAGE


def detected_caption(image) -> str:
    """The caption of what the verifier finds in `image` (its most confident `MAX_OBJECTS`)."""
    found = sorted(detect(image), key=lambda d: -d.score)[:MAX_OBJECTS]
    return caption(Scene(tuple(ShapeObject(d.shape, d.color, d.box) for d in found)))


def report(name: str, descriptions: list[str], images: list, examples: list, accepted: list[bool]) -> None:
    true = [(claims := parse_caption(d)) is not None and verify(i, claims).correct for d, i in zip(descriptions, images)]
    compared = [exact_comparison(d, e.metadata) for d, e in zip(descriptions, examples)]
    print(f"{name}: descriptions true of the image {np.mean(true):.3f}; exact comparison over them: "
          f"{comparison_figures(compared, accepted, [e.tag for e in examples])}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_arguments(parser, steps=300, batch=16, every=100)
    parser.add_argument("--save", default=None, help="save the trained checkpoint here")
    args = parser.parse_args()
    check_probe_arguments(args)
    torch.manual_seed(0)
    adapter = describing_adapter(args.model)
    model, eos = adapter.model, adapter.spec.eos_id
    examples = [sample_example(derive_seed(4242, i), TAGS[i % len(TAGS)]) for i in range(args.images)]
    trajectories = first_images(adapter, examples, seed=4242, guidance=3.0)
    # The reader sees the image as drawn; the verifier reads it at its own size.
    drawn = [t.image(IMAGE) for t in trajectories]
    images = [as_verifiable(image) for image in drawn]
    targets = [
        torch.tensor(adapter.tokenizer(" " + detected_caption(i), add_special_tokens=False)["input_ids"] + [eos])
        for i in images
    ]
    contexts = [adapter.caption_context(image) for image in drawn]
    held = slice(args.train, None)
    accepted = [verify(image, example.metadata).correct for image, example in zip(images[held], examples[held])]
    report("step 0 (the self-check's own descriptions)", [t.text(DESCRIPTION) for t in trajectories[held]],
           images[held], examples[held], accepted)  # fmt: skip

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(0)
    model.train()
    for step in range(1, args.steps + 1):
        rows = rng.choice(args.train, size=args.batch, replace=False)
        logprobs = score(model, adapter.spec, [(*contexts[r], Text(targets[r], scored=True)) for r in rows]).logprobs
        loss = -torch.cat([row[-1] for row in logprobs]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            model.eval()
            with torch.no_grad():
                texts = adapter.sample_text(contexts[held], 32, stop_ids=(eos,),
                                            generator=torch.Generator().manual_seed(0)).texts  # fmt: skip
            model.train()
            report(f"step {step} (train loss {loss.item():.3f})", texts, images[held], examples[held], accepted)
    if args.save:
        print(f"saved to {adapter.save_pretrained(args.save)}")


if __name__ == "__main__":
    main()
