"""The model layer: one adapter over transformers' Janus (DESIGN.md section 3).

`JanusAdapter` samples text and images, decodes, judges and scores segment-typed sequences;
`segments` defines the sequence representation, `guidance` the CFG policy, `sampling` the
sampling distribution, `sampler`/`scoring` the sampling loop and the teacher-forced pass.
"""

from coevolve.model.adapter import JanusAdapter, Judgement
from coevolve.model.introspection import JUDGE_QUESTION
from coevolve.model.guidance import UNCONDITIONAL_PROMPTS, CFGMode, Guidance
from coevolve.model.sampler import ImageSample, TextSample
from coevolve.model.sampling import GREEDY, Sampling
from coevolve.model.scoring import Scores
from coevolve.model.segments import GenImage, SeenImage, Segment, Sequence, Text, validate
from coevolve.model.spec import JanusSpec

__all__ = [
    "GREEDY",
    "JUDGE_QUESTION",
    "UNCONDITIONAL_PROMPTS",
    "CFGMode",
    "GenImage",
    "Guidance",
    "ImageSample",
    "JanusAdapter",
    "JanusSpec",
    "Judgement",
    "Sampling",
    "Scores",
    "SeenImage",
    "Segment",
    "Sequence",
    "Text",
    "TextSample",
    "validate",
]
