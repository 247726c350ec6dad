"""Pre-training of the tiny checkpoint's understanding encoder: the stand-in for Janus's SigLIP.

Janus-Pro's understanding encoder is a pretrained SigLIP whose patch features already say what
the patch shows; SFT and RL build on that. A randomly initialised encoder gives the trunk
features it must learn to see through while it learns to compare them with a prompt, and the
shapes world's SFT budget is too small for both. So the bootstrap trains the encoder
(`JanusVisionModel`, not the aligner or trunk) to tell, from each patch's feature, the colour
and the shape of the object covering that patch (or background) — a linear read-out, through
two throw-away linear heads. Each patch is one cell of the world's grid (`CELL` =
`patch_size`), so every label is exact.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import JanusImageProcessor, JanusVisionModel

from coevolve.data.shapes import balanced_examples
from coevolve.data.shapes.scene import BACKGROUND, CELL, COLOR_NAMES, IMAGE_SIZE, SHAPES, Scene


@dataclass(frozen=True)
class VisionTrainingConfig:
    """How the tiny understanding encoder is pre-trained (see the module docstring)."""

    steps: int = 600
    batch_size: int = 32  # images per step
    pool_size: int = 3000  # scenes rendered once and drawn from
    heldout_size: int = 200  # scenes (another seed) the report's patch accuracies are read on
    learning_rate: float = 1e-3


def patch_labels(scene: Scene, render: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(grid², ) colour ids and shape ids of the object drawn in each patch; 0 = background.

    A patch of an object's box that the shape leaves empty (a circle's corner) is background:
    the label says what the patch shows. Boxes never share a cell (layout.py), so one object at
    most is drawn in a patch.
    """
    grid = IMAGE_SIZE // CELL
    drawn = (render != np.asarray(BACKGROUND)).any(-1).reshape(grid, CELL, grid, CELL).any(axis=(1, 3))
    colors = torch.zeros(grid, grid, dtype=torch.long)
    shapes = torch.zeros(grid, grid, dtype=torch.long)
    for obj in scene.objects:
        x0, y0, x1, y1 = obj.box
        cells = np.zeros((grid, grid), dtype=bool)
        cells[y0 // CELL : (y1 - 1) // CELL + 1, x0 // CELL : (x1 - 1) // CELL + 1] = True
        cells = torch.from_numpy(cells & drawn)
        colors[cells] = 1 + COLOR_NAMES.index(obj.color)
        shapes[cells] = 1 + SHAPES.index(obj.shape)
    return colors.flatten(), shapes.flatten()


def _dataset(num_scenes: int, seed: int, processor: JanusImageProcessor):
    examples = balanced_examples(num_scenes, seed)
    renders = [e.render() for e in examples]
    pixels = processor(renders, return_tensors="pt")["pixel_values"]
    labels = [patch_labels(e.scene, np.asarray(r)) for e, r in zip(examples, renders)]
    return pixels, torch.stack([c for c, _ in labels]), torch.stack([s for _, s in labels])


def train_vision_encoder(
    encoder: JanusVisionModel, processor: JanusImageProcessor, train: VisionTrainingConfig, seed: int,
    progress: bool = True,
) -> dict:
    """Train `encoder` in place on shapes renders; return a report with held-out patch accuracies.

    Deterministic for a fixed `seed` on a given machine and thread count.
    """
    if encoder.config.patch_size != CELL:
        raise ValueError(f"the encoder's patch_size {encoder.config.patch_size} is not the world's cell ({CELL} px)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pixels, colors, shapes = _dataset(train.pool_size, seed, processor)
    width = encoder.config.hidden_size
    heads = torch.nn.ModuleDict({
        "color": torch.nn.Linear(width, len(COLOR_NAMES) + 1), "shape": torch.nn.Linear(width, len(SHAPES) + 1),
    })
    optimizer = torch.optim.AdamW([*encoder.parameters(), *heads.parameters()], lr=train.learning_rate)
    encoder.train()
    bar = tqdm(range(train.steps), desc="training understanding encoder", disable=not progress, unit="step",
               mininterval=0.1 if sys.stderr.isatty() else 15.0)
    for _ in bar:
        batch = torch.from_numpy(rng.integers(0, len(pixels), train.batch_size))
        features = encoder(pixels[batch]).last_hidden_state  # (B, grid², width)
        loss = F.cross_entropy(heads["color"](features).flatten(0, 1), colors[batch].flatten()) + F.cross_entropy(
            heads["shape"](features).flatten(0, 1), shapes[batch].flatten()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    encoder.eval()

    pixels, colors, shapes = _dataset(train.heldout_size, seed + 1, processor)
    with torch.no_grad():
        features = encoder(pixels).last_hidden_state
        on_object = colors > 0
        color_right = (heads["color"](features).argmax(-1) == colors)[on_object].float().mean()
        shape_right = (heads["shape"](features).argmax(-1) == shapes)[on_object].float().mean()
    return {
        "steps": train.steps,
        "images_per_step": train.batch_size,
        "final_loss": round(loss.item(), 5),
        "heldout_object_patch_color_accuracy": round(color_right.item(), 4),
        "heldout_object_patch_shape_accuracy": round(shape_right.item(), 4),
    }
