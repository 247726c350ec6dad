"""`JanusSFTTrainer`: TRL's `SFTTrainer` with the joint loss over segment-typed sequences.

TRL's trainer brings what researchers expect from it (its `SFTConfig`, DeepSpeed through
accelerate, PEFT, gradient checkpointing, checkpoints and resume, TensorBoard, progress bars);
what it cannot know is a Janus sequence: text tokens are scored by the LM head, image tokens by
the generation head, and the understanding images go through the vision encoder. So the dataset
is ours (`coevolve.sft.data`, no TRL preparation) and `compute_loss` scores the batch through the
model layer (`coevolve.model.scoring.score`, conditional logits), one trunk pass per batch.

Loss of a batch: `sum(weight * nll) / number of trained tokens`, so the per-segment weights
shift emphasis between segments without changing the loss scale.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from trl import SFTTrainer

from coevolve.model.guidance import CFGMode
from coevolve.model.scoring import score
from coevolve.model.spec import JanusSpec


def janus_of(model):
    """The `JanusForConditionalGeneration` under the DeepSpeed engine / DDP / PEFT wrappers."""
    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def joint_loss(model, spec: JanusSpec, inputs: dict) -> tuple[torch.Tensor, dict[str, tuple[float, int]]]:
    """A collated batch's loss, `sum(weight * nll) / number of trained tokens`, through one trunk
    pass, and each task's unweighted (nll sum, trained tokens) for the logs."""
    scores = score(model, spec, inputs["sequences"], mode=CFGMode.CONDITIONAL)
    total = 0.0
    count = 0
    per_task: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for task, logprobs, weights in zip(inputs["tasks"], scores.logprobs, inputs["weights"]):
        for lp, weight in zip(logprobs, weights):
            if lp is None:
                continue
            total = total - (lp.float() * weight.to(lp.device)).sum()
            count += lp.numel()
            per_task[task][0] += float(-lp.detach().float().sum())
            per_task[task][1] += lp.numel()
    if count == 0:
        raise ValueError(f"a batch with no trained tokens (items {inputs['indices']})")
    return total / count, {task: (nll, n) for task, (nll, n) in per_task.items()}


class JanusSFTTrainer(SFTTrainer):
    def __init__(self, *args, spec: JanusSpec, **kwargs):
        self.spec = spec
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, per_task = joint_loss(janus_of(model), self.spec, inputs)
        mode = "train" if model.training else "eval"
        for task, (nll, n) in per_task.items():
            self._metrics[mode][f"nll/{task}"].append(nll / n)
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None
