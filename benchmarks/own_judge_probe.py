"""Can the self-check's answer learn to judge the model's own images over its own descriptions?

Draws `--images` first images of the checkpoint (the eval's prompt distribution, seeded apart from
the eval's prompts) with their self-check descriptions, labels each with the verifier's verdict on
the image, and trains the Yes/No answer alone (cross-entropy of the first answer token, as
`judge_probe.py`) on `--train` of them; every `--every` steps it prints the balanced accuracy and
AUC of P(yes) on the rest (held-out own images), against the verifier, and the AUC within a
GenEval category (the eval's `auc_within_category`: pairs of one category only).

`--label compared` trains towards the exact comparison over the description instead
(`own_reading.exact_comparison`: what the description, taken at its word, says of the prompt) and
also prints the held-out balanced accuracy against it: can the answer learn to follow its own
description? `--balance tag` weighs each (category, class) cell equally, so that knowing which
categories the generator fails earns nothing. `--objective pg` trains the answer as RL does
instead (`--draws` answers drawn per image, reward 1 when right, advantage the reward minus its
group's mean): how much of what supervision teaches the policy gradient reaches, and how steadily.
`--objective expected` trains it by the exact policy gradient instead: the expected reward over
both answers (reward 1 when right), whose gradient is what `pg` estimates by drawing, without
the draws' noise.

    python benchmarks/own_judge_probe.py --model runs/shapes/checkpoints/sft
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from own_reading import (  # beside this file
    add_probe_arguments,
    balanced_accuracy,
    check_probe_arguments,
    describing_adapter,
    exact_comparison,
    first_images,
)

from coevolve.data.shapes import TAGS, as_verifiable, derive_seed, sample_example, verify
from coevolve.eval.shapes import p_yes_auc
from coevolve.model.packing import pack, trunk
from coevolve.model.segments import Text
from coevolve.trajectory import DESCRIPTION, IMAGE
from rewards.consistency import class_balance_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_arguments(parser, steps=150, batch=32, every=25)
    parser.add_argument("--label", choices=["verifier", "compared"], default="verifier", help="what the answer is trained towards")
    parser.add_argument("--balance", choices=["class", "tag"], default="class", help="equal weight per class, or per (category, class)")
    parser.add_argument("--objective", choices=["ce", "pg", "expected"], default="ce",
                        help="ce: the answer's cross-entropy; pg: the policy gradient RL gives it (--draws answers "
                             "drawn per image, reward 1 when right, advantage the reward minus its group's mean); "
                             "expected: the exact policy gradient (the expected reward over both answers)")
    parser.add_argument("--draws", type=int, default=4, help="with --objective pg: answers drawn per image (a group)")
    args = parser.parse_args()
    check_probe_arguments(args)
    if args.draws < 1:
        raise SystemExit(f"--draws must be at least 1, got {args.draws}")
    torch.manual_seed(0)
    adapter = describing_adapter(args.model)
    model = adapter.model
    examples = [sample_example(derive_seed(4242, i), TAGS[i % len(TAGS)]) for i in range(args.images)]
    contexts, labels, compared = [], [], []
    for example, t in zip(examples, first_images(adapter, examples, seed=4242, guidance=3.0)):
        image = t.image(IMAGE)
        labels.append(verify(as_verifiable(image), example.metadata).correct)
        compared.append(exact_comparison(t.text(DESCRIPTION), example.metadata))
        described = Text(t.segment(DESCRIPTION).ids)
        contexts.append(adapter.judge_context(image, example.prompt, description=described))
    labels, compared, tags = np.array(labels), np.array(compared), np.array([e.tag for e in examples])
    targets = labels if args.label == "verifier" else compared
    yes, no = adapter.judge_choices(contexts[0])
    train, test = slice(0, args.train), slice(args.train, None)
    print(f"{len(labels)} own images, accepted by the verifier: train {labels[train].mean():.2f}, "
          f"held-out {labels[test].mean():.2f}", flush=True)  # fmt: skip

    def logits(batch) -> torch.Tensor:
        return model.lm_head(trunk(model, pack(batch, adapter.spec, "left")).last_hidden_state[:, -1])[:, [yes, no]]

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            held = contexts[test]
            p_yes = torch.cat([logits(held[i : i + 60]).float().softmax(-1)[:, 0] for i in range(0, len(held), 60)])
        model.train()
        p, truth, tag = p_yes.numpy(), labels[test], tags[test]
        balanced = balanced_accuracy(p > 0.5, truth)
        # As the eval reports it: pairs within a category only (what is left once the category's
        # share of accepted images is known).
        pooled, within = (p_yes_auc(p.tolist(), truth.tolist(), strata) for strata in ([None] * len(p), tag.tolist()))
        against_description = balanced_accuracy(p > 0.5, compared[test])
        print(f"step {step}: held-out own images balanced accuracy {balanced:.3f}, AUC {pooled:.3f} "
              f"(within a category {within:.3f}), P(yes) accepted {p[truth].mean():.2f} rejected "
              f"{p[~truth].mean():.2f}; against the exact comparison over the description: balanced "
              f"{against_description:.3f}", flush=True)  # fmt: skip

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    draw_rng = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    # Each class weighs half of the loss (of each category's, with --balance tag; a category whose
    # examples are all of one class weighs nothing): an answer that ignores the image (or knows
    # only the category) learns nothing.
    scopes = tags[train].tolist() if args.balance == "tag" else [None] * args.train
    row_weight = np.array(class_balance_weights(scopes, targets[train].tolist(), one_class_weighs_zero=True))
    evaluate(0)
    for step in range(1, args.steps + 1):
        rows = rng.choice(args.train, size=args.batch, replace=False)
        target = torch.tensor([0 if targets[r] else 1 for r in rows])
        weight = torch.tensor(row_weight[rows], dtype=torch.float32)
        scores = logits([contexts[r] for r in rows]).float()
        if args.objective == "ce":
            losses = torch.nn.functional.cross_entropy(scores, target, reduction="none")
        elif args.objective == "expected":
            losses = -scores.softmax(-1).gather(1, target[:, None]).squeeze(1)
        else:
            logp = scores.log_softmax(-1)
            drawn = torch.multinomial(logp.exp().detach(), args.draws, replacement=True, generator=draw_rng)
            reward = (drawn == target[:, None]).float()
            advantage = reward - reward.mean(-1, keepdim=True)
            losses = -(advantage * logp.gather(1, drawn)).mean(-1)
        loss = (losses * weight).sum() / weight.sum().clamp_min(1e-12)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            evaluate(step)


if __name__ == "__main__":
    main()
