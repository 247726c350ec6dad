"""Can a checkpoint's self-check learn to see? Train the Yes/No answer alone and watch held-out renders.

The SFT judge task trains the whole verdict (answer and reason); here the loss is the cross-entropy
of the first answer token only (" Yes" vs " No", as `JanusAdapter.judge` reads P(yes)), on seeded
(prompt, render) pairs of one GenEval category or all of them, half violating their prompt. Every
`--every` steps it prints the accuracy of P(yes) > 0.5 on held-out pairs (`--own`: judged over the
descriptions the model samples itself, as in the rollouts) and the mean P(yes) gap
between true and violating renders (per category with `--tag all`). `--tag colors>all:100` trains
on colours for 100 steps, then on all categories.

    python benchmarks/judge_probe.py --model runs/shapes/checkpoints/sft --tag colors --steps 150

The checkpoint is only read; `--save DIR` writes the trained model there (to start RL from a
self-check that already compares, e.g. the `self_check` program's).
"""

from __future__ import annotations

import argparse

import torch

from coevolve.data.shapes import TAGS, derive_seed, sample_example
from coevolve.model import JanusAdapter
from coevolve.model.introspection import CAPTION_QUESTION, JUDGE_QUESTION
from coevolve.model.packing import pack, trunk

TRAIN_SEED, HELDOUT_SEED = 1, 999


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Janus checkpoint directory")
    parser.add_argument("--tag", default="all", help="a GenEval category, 'all', or 'FIRST>SECOND:STEPS'")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--heldout", type=int, default=120)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--describe", action="store_true",
                        help="the image's true caption precedes the question (describe, then judge)")
    parser.add_argument("--own", action="store_true",
                        help="with --describe, evaluate over the descriptions the model writes itself (sampled) "
                             "instead of the true captions")
    parser.add_argument("--train-own", action="store_true",
                        help="with --describe, train over descriptions the model samples itself (each step, from "
                             "the current weights) instead of the true captions")
    parser.add_argument("--save", default=None, help="write the trained model to this directory at the end")
    args = parser.parse_args()
    if (args.own or args.train_own) and not args.describe:
        raise SystemExit("--own and --train-own need --describe (the describing self-check)")
    phases = [(args.tag, args.steps)]
    if ">" in args.tag:
        first, rest = args.tag.split(">")
        second, switch = rest.split(":")
        phases = [(first, int(switch)), (second, args.steps - int(switch))]
    for tag, _ in phases:
        if tag != "all" and tag not in TAGS:
            raise SystemExit(f"--tag: unknown category {tag!r}; expected 'all' or one of {', '.join(TAGS)}")

    torch.manual_seed(0)
    adapter = JanusAdapter.from_pretrained(args.model)
    model = adapter.model

    def category(tag: str, index: int) -> str:
        return TAGS[index // 2 % len(TAGS)] if tag == "all" else tag  # pairs: one true, one violating

    def context(example):
        if not args.describe:
            return adapter.judge_context(example.render(), example.prompt)
        return adapter.chat([
            {"role": "user", "content": [{"type": "image", "image": example.render()},
                                         {"type": "text", "text": CAPTION_QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": " " + example.caption}]},
            {"role": "user", "content": [{"type": "text", "text": JUDGE_QUESTION.format(prompt=example.prompt)}]},
        ])

    def pairs(tag: str, seed: int, n: int, start: int):
        examples = [
            sample_example(derive_seed(seed, start + i), category(tag, start + i), satisfies=bool((start + i) % 2))
            for i in range(n)
        ]
        contexts = [context(example) for example in examples]
        return contexts, torch.tensor([0 if example.satisfies else 1 for example in examples]), examples

    yes, no = adapter.judge_choices(pairs("colors", TRAIN_SEED, 1, 0)[0][0])

    def answer_logits(contexts) -> torch.Tensor:
        hidden = trunk(model, pack(contexts, adapter.spec, "left")).last_hidden_state[:, -1]
        return model.lm_head(hidden)[:, [yes, no]].float()

    def own_contexts(examples, seed: int):
        """The self-check as the rollouts and the eval run it: the model describes the render first."""
        images, prompts = [e.render() for e in examples], [e.prompt for e in examples]
        model.eval()
        with torch.no_grad():
            described = adapter.judge(images, prompts, generator=torch.Generator().manual_seed(seed)).descriptions
        model.train()
        return [adapter.judge_context(i, p, description=d) for i, p, d in zip(images, prompts, described.ids)]

    def evaluate(step: int, tag: str) -> None:
        contexts, labels, examples = pairs(tag, HELDOUT_SEED, args.heldout, 0)
        if args.own:
            contexts = own_contexts(examples, step)
        model.eval()
        with torch.no_grad():
            p_yes = answer_logits(contexts).softmax(-1)[:, 0]
        model.train()
        right = ((p_yes > 0.5) == (labels == 0)).float()
        gap = p_yes[labels == 0].mean() - p_yes[labels == 1].mean()
        line = f"step {step} ({tag}): held-out accuracy {right.mean():.2f}, P(yes) true - violating {gap:+.3f}"
        if tag == "all":
            per = {t: right[[e.tag == t for e in examples]].mean().item() for t in TAGS}
            line += "  " + " ".join(f"{t} {v:.2f}" for t, v in per.items())
        print(line, flush=True)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    step = 0
    evaluate(step, phases[0][0])
    for tag, steps in phases:
        for _ in range(steps):
            step += 1
            contexts, labels, examples = pairs(tag, TRAIN_SEED, args.batch, step * args.batch)
            if args.train_own:
                contexts = own_contexts(examples, 10_000 + step)
            loss = torch.nn.functional.cross_entropy(answer_logits(contexts), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % args.every == 0:
                print(f"  loss {loss.item():.3f}", flush=True)
                evaluate(step, tag)
    if args.save:
        print(f"saved to {adapter.save_pretrained(args.save)}")


if __name__ == "__main__":
    main()
