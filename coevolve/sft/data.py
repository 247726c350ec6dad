"""The SFT task mixture: training example `i` is a pure function of `(seed, i)`.

Which task, which record, whether a judge example shows the negative image and whether the
prompt is dropped are drawn from a generator seeded by `(seed, i)`; so the stream does not
depend on how it is batched or where a run resumed — the Trainer's seeded sampler and its
batch skipping on resume give the same data order as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterable

import datasets
import numpy as np
import torch

from coevolve.config.schema import TASKS, DataConfig, SFTConfig
from coevolve.data.records import Record
from coevolve.model import JanusAdapter
from coevolve.model.images import encode_images
from coevolve.sft.tasks import PreparedRecord, TaskBuilder, TrainingExample

REQUIRED_FIELDS = {
    "t2i": ("prompt", "image", "plan"),
    "judge": ("prompt", "image", "negative_image", "negative_reason"),
    "regen": ("prompt", "image", "plan", "negative_image", "negative_reason"),
    "caption": ("image", "caption"),
    "draw_caption": ("image", "caption"),
}
# A describing checkpoint's judge example holds the caption of the image it judges.
DESCRIBED_JUDGE_FIELDS = ("caption", "negative_caption")
IMAGE_TASKS = ("t2i", "regen", "draw_caption")
# The tasks whose image may be the decoded one (`sft.decoded_images`): the self-check is what sees
# the model's own images; captions are of renders, in eval and in the reconstruction program.
DECODED_TASKS = ("judge",)
# The tasks whose image may carry debris (`sft.debris_images`): those that read an image.
DEBRIS_TASKS = ("caption", "judge")
MAX_DEBRIS = 6


def required_fields(weights: dict[str, float], self_check: str = "direct") -> set[str]:
    """The record fields the tasks with a positive weight read (`self_check`: the checkpoint's,
    `JanusAdapter.self_check`)."""
    fields = {name for task, weight in weights.items() if weight > 0 for name in REQUIRED_FIELDS[task]}
    if self_check == "describe" and weights.get("judge", 0) > 0:
        fields |= set(DESCRIBED_JUDGE_FIELDS)
    return fields


def load_sft_records(data: DataConfig, seed: int, weights: dict[str, float], self_check: str) -> list[Record]:
    """The records named by `data` (the shapes world or a local dataset), checked for the fields
    the mixture needs."""
    from coevolve.data.records import load_records, shapes_records

    required = required_fields(weights, self_check)
    if data.source == "shapes":
        if data.num_examples is None:
            raise ValueError("data.num_examples must be set for the shapes world (it draws that many records)")
        return shapes_records(data.num_examples, seed)
    return load_records(data.source, required=required, limit=data.num_examples)


@torch.no_grad()
def prepare_records(adapter: JanusAdapter, records: list[Record], batch_size: int = 256) -> list[PreparedRecord]:
    """Tokenise every record's images with the checkpoint's VQ tokenizer, once, in batches."""

    def codes_of(images: list) -> list[torch.Tensor]:
        out = []
        for start in range(0, len(images), batch_size):
            out.extend(encode_images(adapter.model, adapter.processor, images[start : start + batch_size]).cpu())
        return out

    image_codes = codes_of([r.image for r in records])
    negatives = [r for r in records if r.negative_image is not None]
    negative_codes = iter(codes_of([r.negative_image for r in negatives]))
    return [
        PreparedRecord(
            where=r.where,
            prompt=r.prompt,
            image=r.image,
            image_codes=codes,
            plan=r.plan,
            caption=r.caption,
            negative_image=r.negative_image,
            negative_codes=next(negative_codes) if r.negative_image is not None else None,
            negative_reason=r.negative_reason,
            negative_caption=r.negative_caption,
        )
        for r, codes in zip(records, image_codes)
    ]


class TaskMixture:
    """The mixture's draws and how a drawn row becomes a training example.

    `rows(length)` is the run's data as a `datasets.Dataset` (what TRL's trainer takes): one row
    per training example — index, task, record, negative, dropped — and `collate` turns a batch
    of rows into sequences, reading images and building segments only for the batches trained.
    """

    def __init__(self, records: list[PreparedRecord], builder: TaskBuilder, sft: SFTConfig, seed: int):
        if not records:
            raise ValueError("the SFT data source gave no records")
        weights = sft.tasks.weights()
        self.records = records
        self.builder = builder
        self.tasks = [task for task in TASKS if weights[task] > 0]
        total = sum(weights[task] for task in self.tasks)
        self.probabilities = np.array([weights[task] / total for task in self.tasks])
        self.prompt_dropout = sft.prompt_dropout
        self.decoded_images = sft.decoded_images
        self.debris_images = sft.debris_images
        self.seed = seed

    def draw(self, index: int) -> dict:
        """Row `index`: which task, on which record, with the negative image, with the prompt dropped,
        seeing the decoded image, with how many debris fragments on it."""
        rng = np.random.default_rng([self.seed, index])
        task = self.tasks[int(rng.choice(len(self.tasks), p=self.probabilities))]
        record = int(rng.integers(len(self.records)))
        negative = bool(rng.random() < 0.5)
        dropped = bool(rng.random() < self.prompt_dropout) and task in IMAGE_TASKS
        decoded = bool(rng.random() < self.decoded_images) and task in DECODED_TASKS
        debris = int(rng.integers(1, MAX_DEBRIS + 1)) if rng.random() < self.debris_images else 0
        return {
            "index": index, "task": task, "record": record, "negative": negative, "dropped": dropped,
            "decoded": decoded, "debris": debris if task in DEBRIS_TASKS else 0,
        }  # fmt: skip

    def rows(self, length: int) -> datasets.Dataset:
        draws = [self.draw(index) for index in range(length)]
        return datasets.Dataset.from_dict({key: [d[key] for d in draws] for key in draws[0]})

    def _judged_codes(self, row: dict) -> torch.Tensor:
        return self.builder.judged_codes(self.records[row["record"]], row["negative"])

    def example(self, row: dict, decoded=None) -> TrainingExample:
        """Row `row`'s example; `decoded`: the decoded image a decoded judge row sees, when the
        caller decoded it already (else it is decoded here)."""
        record = self.records[row["record"]]
        task = row["task"]
        debris = (row["debris"], np.random.default_rng([self.seed, row["index"], 1])) if row["debris"] else None
        if task == "judge":
            if row["decoded"] and decoded is None:
                (decoded,) = self.builder.decoded([self._judged_codes(row)])
            return self.builder.judge(record, row["negative"], decoded if row["decoded"] else None, debris)
        if task == "caption":
            return self.builder.caption(record, debris)
        return getattr(self.builder, task)(record, row["dropped"])

    def collate(self, rows: Iterable[dict]) -> dict:
        rows = list(rows)
        # The batch's decoded images in one VQ decoder pass: one at a time, a read-phase batch took
        # 1.6x as long to collate (benchmarks/sft_step.py).
        seeing = [i for i, row in enumerate(rows) if row["task"] == "judge" and row["decoded"]]
        images = self.builder.decoded([self._judged_codes(rows[i]) for i in seeing])
        decoded = dict(zip(seeing, images))
        examples = [self.example(row, decoded.get(i)) for i, row in enumerate(rows)]
        return {
            "sequences": [e.sequence for e in examples],
            "weights": [e.weights for e in examples],
            "tasks": [e.task for e in examples],
            "indices": [row["index"] for row in rows],
        }
