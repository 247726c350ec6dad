"""Training transformers' `JanusVQVAE` on shapes-world renders.

Janus' VQ tokenizer is LlamaGen's: a conv encoder, a cosine-similarity codebook (codes and
latents are l2-normalised before matching) and a conv decoder. transformers' port keeps the
decoder side (`get_codebook_entry` normalises) but its `encode` matches unnormalised latents
against the raw codebook. Training here uses the cosine codebook and stores unit-norm codes, for
which both matchings pick the same code — so `encode`/`decode` of the saved model agree with
what was trained.

How it departs from VQGAN training, for a 2-core CPU budget of a few minutes:
- the code vocabulary is read off the renders instead of learnt by vector quantisation:
  objects sit on the token grid (see `coevolve.data.shapes.layout`), so a scene is made of a
  few hundred distinct 8x8 patches; each distinct patch gets one code id (by frequency, so
  the background is id 0). The decoder learns codebook vector -> pixels, the encoder learns
  pixels -> code id (cross-entropy over cosine similarities), both supervised, which converges
  in hundreds of steps where end-to-end VQ training needs thousands;
- half the training images are dense mosaics of objects packed onto the grid (the same
  patches as prompt scenes, several times more of them per image), half scenes of the
  prompt distribution, so per-image statistics (GroupNorm) also match what it will decode;
- every residual branch of the decoder starts at zero (Fixup-style), small batches, many steps;
- no GAN or perceptual loss: flat colours on grey need only L1+L2, with object pixels and
  outlines up-weighted (otherwise the decoder first settles on "all background");
- PyTorch's default (Kaiming) init for convs: transformers' N(0, 0.02) init is meant to be
  overwritten by pretrained weights and stalls this deep conv net when training from scratch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from tqdm.auto import tqdm
from transformers import JanusVQVAEConfig
from transformers.models.janus.modeling_janus import JanusVQVAE, JanusVQVAEAttnBlock, JanusVQVAEResnetBlock

from coevolve.data.shapes import balanced_examples
from coevolve.data.shapes.layout import cell_box, cells_spanned
from coevolve.data.shapes.scene import (
    BACKGROUND, CELL, COLOR_NAMES, COLORS, IMAGE_SIZE, MAX_OBJECT_SIZE, MIN_OBJECT_SIZE, SHAPES, draw_shape,
)


@dataclass(frozen=True)
class VQTrainingConfig:
    """How the tiny VQ tokenizer is trained (see the module docstring)."""

    steps: int = 800
    batch_size: int = 8  # images per step
    pool_size: int = 3000  # rendered images the patch vocabulary is read from and trained on
    mosaic_fraction: float = 0.5  # share of the pool that is dense mosaics (see dense_mosaic)
    learning_rate: float = 3e-3
    foreground_weight: float = 4.0  # loss weight of object pixels relative to background
    temperature: float = 0.07  # of the encoder's cosine-similarity logits
    edge_weight: float = 8.0  # extra loss weight of pixels next to a colour change (shape outlines)


def dense_mosaic(rng: np.random.Generator) -> Image.Image:
    """A render packed with grid-aligned objects of every kind (a training image, not a scene).

    Objects fill blocks of grid cells through layout.py's own `cell_box`, in the sizes scenes
    use, so each patch is one the world's scenes contain too.
    """
    cells = IMAGE_SIZE // CELL
    free = np.ones((cells, cells), dtype=bool)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for flat in rng.permutation(cells * cells):
        cy, cx = divmod(int(flat), cells)
        size = int(rng.integers(cells_spanned(MIN_OBJECT_SIZE), cells_spanned(MAX_OBJECT_SIZE), endpoint=True))
        if cy + size > cells or cx + size > cells or not free[cy : cy + size, cx : cx + size].all():
            continue
        if rng.random() < 0.3:  # leave some background between objects, as scenes do
            continue
        free[cy : cy + size, cx : cx + size] = False
        shape, color = SHAPES[rng.integers(len(SHAPES))], COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
        draw_shape(draw, shape, cell_box(cx, cy, size), COLORS[color])
    return image


def patch_vocabulary(images: np.ndarray, patch: int, max_codes: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H/patch, W/patch) code ids, one id per distinct patch.

    Ids are ordered by decreasing frequency (ties by first appearance), so they do not depend
    on dictionary order. More distinct patches than `max_codes` is an error: the renders are
    not aligned to the token grid this checkpoint uses.
    """
    n, height, width, _ = images.shape
    gh, gw = height // patch, width // patch
    patches = images.reshape(n, gh, patch, gw, patch, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n * gh * gw, -1)
    keys = np.ascontiguousarray(patches).view(np.dtype((np.void, patches.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    if len(counts) > max_codes:
        raise ValueError(
            f"renders hold {len(counts)} distinct {patch}x{patch} patches but the codebook has {max_codes} "
            "codes; objects must sit on the token grid"
        )
    order = np.lexsort((first, -counts))  # most frequent first
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.ravel()].reshape(n, gh, gw)


def _reinit(vq: JanusVQVAE) -> None:
    """Kaiming init for convs, and every residual branch of the decoder starting at zero, so the
    untrained decoder is a short plain path that learns quickly (as in Fixup / zero-init-residual)."""
    for module in vq.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.reset_parameters()
    for module in vq.decoder.modules():
        if isinstance(module, JanusVQVAEResnetBlock):
            torch.nn.init.zeros_(module.conv2.weight)
            torch.nn.init.zeros_(module.conv2.bias)
        elif isinstance(module, JanusVQVAEAttnBlock):
            torch.nn.init.zeros_(module.proj_out.weight)
            torch.nn.init.zeros_(module.proj_out.bias)


def _edges(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) flat-colour image -> (B, 1, H, W) 1.0 where a 4-neighbour has another colour."""
    c = F.pad(x, (1, 1, 1, 1), mode="replicate")
    centre = c[..., 1:-1, 1:-1]
    neighbours = (c[..., :-2, 1:-1], c[..., 2:, 1:-1], c[..., 1:-1, :-2], c[..., 1:-1, 2:])
    differs = torch.stack([(n - centre).abs().amax(dim=1) > 0.05 for n in neighbours]).any(dim=0)
    return differs[:, None].float()


def train_vq(config: JanusVQVAEConfig, train: VQTrainingConfig, seed: int, progress: bool = True) -> tuple[JanusVQVAE, dict]:
    """Train a `JanusVQVAE` with `config` on shapes renders; return it (eval mode) and a report.

    Deterministic for a fixed `seed` on a given machine and thread count.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    num_scenes = train.pool_size - int(train.mosaic_fraction * train.pool_size)
    scenes = [e.render() for e in balanced_examples(num_scenes, seed)]
    mosaics = [dense_mosaic(rng) for _ in range(train.pool_size - len(scenes))]
    renders = np.stack([np.asarray(im) for im in scenes + mosaics])
    patch = renders.shape[1] // config.num_patches
    ids = torch.from_numpy(patch_vocabulary(renders, patch, config.num_embeddings))
    pixels = torch.from_numpy(renders).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    background = torch.tensor(BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1.0

    vq = JanusVQVAE(config)
    _reinit(vq)
    vq.train()
    codebook = vq.quantize.embedding.weight
    optimizer = torch.optim.Adam(vq.parameters(), lr=train.learning_rate, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.learning_rate, total_steps=train.steps, pct_start=0.1)

    # Redirected to a log, a bar redrawn per step is thousands of lines: redraw rarely there.
    bar = tqdm(range(train.steps), desc="training VQ tokenizer", disable=not progress, unit="step",
               mininterval=0.1 if sys.stderr.isatty() else 15.0)
    for _ in bar:
        batch = torch.from_numpy(rng.integers(0, len(pixels), train.batch_size))
        x, target = pixels[batch], ids[batch]  # (B, 3, H, W), (B, h, w)

        codes = F.normalize(codebook, dim=-1)
        q = codes[target].permute(0, 3, 1, 2)  # (B, D, h, w)
        reconstruction = vq.decoder(vq.post_quant_conv(q))
        foreground = ((x - background).abs().amax(dim=1, keepdim=True) > 0.05).float()
        weight = 1.0 + (train.foreground_weight - 1.0) * foreground
        weight = weight + train.edge_weight * _edges(x)
        error = ((reconstruction - x).abs() + (reconstruction - x) ** 2).mean(dim=1)  # (B, H, W)
        recon_loss = (weight[:, 0] * error).sum() / weight.sum()

        z = F.normalize(vq.quant_conv(vq.encoder(x)).permute(0, 2, 3, 1), dim=-1)  # (B, h, w, D)
        logits = z @ codes.detach().T / train.temperature
        code_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

        optimizer.zero_grad(set_to_none=True)
        (recon_loss + code_loss).backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(recon=f"{recon_loss.item():.4f}", code=f"{code_loss.item():.3f}", refresh=False)

    with torch.no_grad():
        codebook.copy_(F.normalize(codebook, dim=-1))
    vq.eval()
    report = {
        "steps": train.steps,
        "images_per_step": train.batch_size,
        "distinct_patches": int(ids.max()) + 1,
        "final_reconstruction_loss": round(recon_loss.item(), 5),
        "final_code_loss": round(code_loss.item(), 5),
    }
    return vq, report
