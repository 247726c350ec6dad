"""How fast does a checkpoint learn to bind words to pixels? Short training runs on one task, probed.

    python benchmarks/binding_training_probe.py --model runs/shapes/checkpoints/tiny --task t2i --imgw 5

Trains (AdamW, batch 32, 600 seeded examples of `--tag`) on one task — `t2i` (prompt -> plan +
image), `caption` (image -> caption), `plan` (prompt -> plan), `both` (t2i and caption
alternating) — and every 25 steps prints the probe of `binding_probe.py` for that direction on 40
held-out colour renders: the right context against a colour-swapped one (`gap`, nats; for t2i the
log-prob of the object's first cell, also against a shape-swapped context). Options reproduce the
README's experiments: `--imgw` / `--objw` / `--bgw` weight image / object / background tokens,
`--focal` a focal exponent, `--firstonly` the loss on the first object cell only, `--noise`
replaces a fraction of image input tokens, `--headinit` / `--vhead` re-initialise the generation
path fan-in scaled, `--qk` scales the trunk's query/key weights, `--spot`/`--const` replace the
images by one colour-coded token at a fixed/random place or everywhere, `--curriculum N` trains
the first N steps on colour scenes, `--alignscale` scales the generation aligner's output layer.
"""

import argparse
import dataclasses
import random
import time

import torch

from coevolve.data.shapes import COLOR_NAMES, derive_seed, sample_example
from coevolve.data.shapes.scene import Scene, render
from coevolve.model.adapter import JanusAdapter
from coevolve.model.guidance import CFGMode
from coevolve.model.images import encode_images
from coevolve.model.scoring import score
from coevolve.model.segments import GenImage

ap = argparse.ArgumentParser()
ap.add_argument("--task", default="caption")
ap.add_argument("--steps", type=int, default=150)
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--tag", default="colors")
ap.add_argument("--bs", type=int, default=32)
ap.add_argument("--model", required=True)
ap.add_argument("--focal", type=float, default=0.0)
ap.add_argument("--noise", type=float, default=0.0)
ap.add_argument("--const", action="store_true")
ap.add_argument("--bgw", type=float, default=1.0)
ap.add_argument("--firstonly", action="store_true")
ap.add_argument("--show", action="store_true")
ap.add_argument("--spot", default="")
ap.add_argument("--qk", type=float, default=1.0)
ap.add_argument("--objw", type=float, default=1.0)
ap.add_argument("--headinit", action="store_true")
ap.add_argument("--vhead", action="store_true")
ap.add_argument("--imgw", type=float, default=1.0)
ap.add_argument("--alignscale", type=float, default=1.0, help="scale the generation aligner output layer")
ap.add_argument("--examples", type=int, default=600, help="training examples drawn from")
ap.add_argument("--curriculum", type=int, default=0, help="first N steps on --tag colors, then --tag")
a = ap.parse_args()
torch.manual_seed(0)
import copy

import coevolve.model.packing as P

_embed = P.embed


def noisy_embed(model, packed):
    if a.noise and model.training:
        packed = copy.copy(packed)
        flip = packed.is_code & (torch.rand(packed.codes.shape) < a.noise)
        packed.codes = torch.where(flip, torch.randint(0, 1024, packed.codes.shape), packed.codes)
    return _embed(model, packed)


P.embed = noisy_embed
ad = JanusAdapter.from_pretrained(a.model)
m = ad.model
m.train()
with torch.no_grad():
    for n, p in m.named_parameters():
        if "language_model" in n and ("q_proj" in n or "k_proj" in n):
            p.mul_(a.qk)
        if a.headinit and n.endswith("weight") and ("generation_head.proj_out" in n or "generation_aligner" in n):
            torch.nn.init.normal_(p, std=p.shape[1] ** -0.5)
        if "generation_aligner.hidden_layers.0" in n:
            p.mul_(a.alignscale)
        if a.vhead and n.endswith("weight") and "generation_head.vision_head" in n:
            torch.nn.init.normal_(p, std=p.shape[1] ** -0.5)
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
exs = [sample_example(derive_seed(5, i), a.tag if a.tag != "all" else TAGS[i % 6]) for i in range(a.examples)]
if a.curriculum:
    exs += [sample_example(derive_seed(6, i), "colors") for i in range(600)]
test = [sample_example(derive_seed(77, i), "colors") for i in range(40)]
imgs = [e.render() for e in exs]
codes = encode_images(m, ad.processor, imgs).cpu() if a.task != "caption" else None
tcodes = encode_images(m, ad.processor, [e.render() for e in test]).cpu()
bg = int(torch.mode(tcodes.flatten()).values)
if a.spot:

    def spot(e, i):
        c = torch.zeros(64, dtype=torch.long)
        k = (20 if a.spot == "fixed" else 10 + (i * 7919) % 40) if not a.spot.isdigit() else int(a.spot)
        c[k] = 500 + 7 * COLOR_NAMES.index(e.scene.objects[0].color)
        return c

    codes = torch.stack([spot(e, i) for i, e in enumerate(exs)])
    tcodes = torch.stack([spot(e, i + 3) for i, e in enumerate(test)])
    bg = 0
if a.const:
    codes = torch.stack([torch.full((64,), 500 + 7 * COLOR_NAMES.index(e.scene.objects[0].color)) for e in exs])
    tcodes = torch.stack([torch.full((64,), 500 + 7 * COLOR_NAMES.index(e.scene.objects[0].color)) for e in test])
    bg = -1
params = [p for n, p in m.named_parameters() if p.requires_grad and "vqmodel" not in n]
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)


def recol(e):
    o = e.scene.objects[0]
    c = COLOR_NAMES[(COLOR_NAMES.index(o.color) + 3) % 10]
    return render(Scene((dataclasses.replace(o, color=c),)))


def seqs(idx):
    if a.task == "plan":
        return [ad.image_prompt(exs[i].prompt) + (ad.text(" " + exs[i].plan, scored=True),) for i in idx]
    if a.task == "both":
        return [
            ad.caption_context(imgs[i]) + (ad.text(" " + exs[i].caption, scored=True),)
            if k % 2
            else ad.image_prompt(exs[i].prompt) + (ad.text(" " + exs[i].plan, scored=True), GenImage(codes[i]))
            for k, i in enumerate(idx)
        ]
    if a.task == "caption":
        return [ad.caption_context(imgs[i]) + (ad.text(" " + exs[i].caption, scored=True),) for i in idx]
    return [ad.image_prompt(exs[i].prompt) + (ad.text(" " + exs[i].plan, scored=True), GenImage(codes[i])) for i in idx]


@torch.no_grad()
def probe():
    m.eval()
    if a.task == "plan":
        out = []
        for sw in (0, 3):
            s = []
            for e in test:
                col = e.scene.objects[0].color
                new = COLOR_NAMES[(COLOR_NAMES.index(col) + sw) % 10]
                s.append(ad.image_prompt(e.prompt.replace(col, new)) + (ad.text(" " + e.plan, scored=True),))
            out.append(
                float(torch.cat([lp[-1] for lp in score(m, ad.spec, s, mode=CFGMode.CONDITIONAL).logprobs]).mean())
            )
    elif a.task == "caption":
        out = []
        for ims in ([e.render() for e in test], [recol(e) for e in test]):
            s = [ad.caption_context(im) + (ad.text(" " + e.caption, scored=True),) for im, e in zip(ims, test)]
            out.append(
                float(torch.cat([lp[-1] for lp in score(m, ad.spec, s, mode=CFGMode.CONDITIONAL).logprobs]).mean())
            )
    else:
        out = []
        SH = ("circle", "square", "triangle", "cross")
        for sw in (0, 3, -1):
            s = []
            for e, c in zip(test, tcodes):
                if sw >= 0:
                    col = e.scene.objects[0].color
                    new = COLOR_NAMES[(COLOR_NAMES.index(col) + sw) % 10]
                else:
                    col = e.scene.objects[0].shape
                    new = SH[(SH.index(col) + 1) % 4]
                s.append(
                    ad.image_prompt(e.prompt.replace(col, new))
                    + (ad.text(" " + e.plan.replace(col, new)), GenImage(c, scored=True))
                )
            lps = score(m, ad.spec, s, mode=CFGMode.CONDITIONAL).logprobs
            vals = [float(lp[-1][int((c != bg).nonzero()[0])]) for lp, c in zip(lps, tcodes)]
            if sw == 0 and a.show:
                for lp, c, e in list(zip(lps, tcodes, test))[:4]:
                    k = int((c != bg).nonzero()[0])
                    print(
                        "   ",
                        e.prompt,
                        "k",
                        k,
                        "target",
                        int(c[k]),
                        "lp",
                        [round(float(v), 2) for v in lp[-1][max(0, k - 2) : k + 3]],
                    )
            out.append(sum(vals) / len(vals))
    m.train()
    return out


t0 = time.time()
for step in range(a.steps + 1):
    if step % 25 == 0:
        r = probe()
        print(
            f"step {step} t={time.time() - t0:.0f}s probe right={r[0]:.3f} wrong={r[1]:.3f} gap={r[0] - r[1]:.3f}"
            + (f" shape-gap={r[0] - r[2]:.3f}" if len(r) > 2 else ""),
            flush=True,
        )
    if step == a.steps:
        break
    pool = range(a.examples, a.examples + 600) if a.curriculum and step < a.curriculum else range(a.examples)
    idx = random.Random(step).sample(pool, a.bs)
    lps = score(m, ad.spec, seqs(idx), mode=CFGMode.CONDITIONAL).logprobs
    tot = 0
    n = 0
    for i, lp in zip(idx, lps):
        for x in lp:
            if x is None:
                continue
            w = (1 - x.detach().exp()) ** a.focal if a.focal else torch.ones_like(x)
            if x.numel() == 64 and a.bgw != 1.0:
                w = w * torch.where(codes[i] == bg, a.bgw, 1.0)
            if x.numel() == 64:
                w = w * a.imgw
            if x.numel() == 64 and a.objw != 1.0:
                w = w * torch.where(codes[i] != bg, a.objw, 1.0)
            if x.numel() == 64 and a.firstonly:
                w = torch.zeros_like(x)
                w[int((codes[i] != bg).nonzero()[0])] = 1.0
            tot = tot - (x * w).sum()
            n += x.numel()
    loss = tot / n
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    if step % 25 == 0:
        print(f"  loss {loss.item():.3f}", flush=True)
