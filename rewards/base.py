"""The scorer interface: a batch of trajectories in, one float per trajectory out.

A scorer is a small class (DESIGN.md section 5):

    class MyScorer(Scorer):
        def score(self, trajectories):
            return ScoreBatch([...one float per trajectory...], details=[{...}, ...])

It is built from config, either by class path (`{_target_: my_module.MyScorer, **kwargs}`, through
`hydra.utils.instantiate`) or, for the built-ins, by registry name (`{name: shapes_verifier,
**kwargs}`). `resolve_scorer_spec` binds the kwargs to the constructor's signature first, so a
misspelt key or an unknown name fails before any model is loaded.

What a scorer declares:
- `device` / `resources`: where it runs and what a reward worker must reserve for it (a scorer
  holding a model on "cuda" needs a GPU);
- `max_concurrency`: how many calls of `score` may run at once on parts of one batch. A scorer
  that waits on I/O (a remote judge) sets it above 1; the reward terms (`terms.py`) then split
  the batch into that many parts, each of whole groups, and score them on a thread pool.

A scorer never returns a placeholder for a sample it could not score: it raises, and the reward
terms turn that into a `ScorerError` naming the term, the scorer and the samples.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from coevolve.trajectory import Trajectory

FINAL = "final"
"""Image selector for the regenerated image when a trajectory has one, else its first image."""
SOURCE = "source"
"""Image selector for the image a trajectory started from (`Trajectory.source_image`)."""


@dataclass(frozen=True)
class Resources:
    """What a worker running the scorer must reserve (read by the reward actors of the RL driver)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    device: str = "cpu"


@dataclass
class ScoreBatch:
    """One score per trajectory, in input order, and optionally per-trajectory details for the traces."""

    scores: Sequence[float]
    details: list[dict[str, Any]] | None = None


class Scorer:
    """Base class of every scorer. Subclasses implement `score`."""

    max_concurrency: int = 1
    num_cpus: float = 1.0
    device: str = "cpu"
    # Constructor parameters that take another scorer (a spec or a built scorer), e.g. the judge of
    # `self_consistency`: `resolve_scorer_spec` checks their specs too.
    nested_scorers: ClassVar[tuple[str, ...]] = ()

    @property
    def resources(self) -> Resources:
        gpus = 1.0 if torch.device(self.device).type == "cuda" else 0.0
        return Resources(num_cpus=self.num_cpus, num_gpus=gpus, device=str(self.device))

    def score(self, trajectories: Sequence[Trajectory]) -> ScoreBatch:
        """Score `trajectories`: `ScoreBatch.scores` has one finite float per trajectory, in order."""
        raise NotImplementedError(f"{type(self).__name__} does not implement score()")

    def __repr__(self) -> str:
        return class_path(type(self))


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def select_image(trajectory: Trajectory, segment: str) -> Image.Image:
    """The image a scorer reads: segment `segment`, with `FINAL` the trajectory's final image, with
    `SOURCE` the image it started from (`source_image`: a reconstruction's render, a self-check's
    judged image)."""
    if segment == SOURCE:
        if trajectory.source_image is None:
            raise ValueError(f"trajectory {trajectory.id!r} has no source image (segment {SOURCE!r})")
        return trajectory.source_image
    return trajectory.final_image if segment == FINAL else trajectory.image(segment)


def check_segment_name(segment: str, owner: str) -> str:
    if not isinstance(segment, str) or not segment:
        raise ValueError(f"{owner}: segment must be a segment name, {FINAL!r} or {SOURCE!r}, got {segment!r}")
    return segment


# -- registry and construction ---------------------------------------------------------------

SCORERS: dict[str, type[Scorer]] = {}
"""Built-in scorers by short name (`{name: shapes_verifier}` in config)."""


def register_scorer(name: str):
    """Class decorator: make a scorer buildable as `{name: NAME, ...}`."""

    def decorate(cls: type[Scorer]) -> type[Scorer]:
        if name in SCORERS and SCORERS[name] is not cls:
            raise ValueError(f"scorer name {name!r} is taken by {class_path(SCORERS[name])}")
        SCORERS[name] = cls
        return cls

    return decorate


def _plain(spec: Any) -> Any:
    return OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else spec


def resolve_scorer_spec(spec: Mapping, where: str = "scorer") -> tuple[type[Scorer], dict[str, Any]]:
    """The scorer class and constructor kwargs a spec names, checked without building anything.

    `spec` holds `_target_` (a class path) or `name` (a built-in), plus kwargs. Raises ValueError
    naming `where` (the config key) for an unknown name or class, a class that is not a `Scorer`,
    or kwargs its constructor does not take (a misspelt key); nested scorer specs are checked too.
    """
    spec = _plain(spec)
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping with `_target_` or `name`, got {spec!r}")  # noqa: TRY004 - a config error
    kwargs = dict(spec)
    if "_target_" in kwargs and "name" in kwargs:
        raise ValueError(f"{where} has both `_target_` and `name`; give one")
    if "_target_" in kwargs:
        target = kwargs.pop("_target_")
        try:
            cls = get_class(target) if isinstance(target, str) else target
        except Exception as error:  # Hydra wraps import errors in its own types
            raise ValueError(f"{where}._target_: cannot import {target!r}: {error}") from error
    elif "name" in kwargs:
        name = kwargs.pop("name")
        if name not in SCORERS:
            raise ValueError(f"{where}.name: unknown scorer {name!r}; built-in scorers: {', '.join(sorted(SCORERS))}")
        cls = SCORERS[name]
    else:
        raise ValueError(
            f"{where} needs `_target_` (a Scorer class path) or `name` (one of {', '.join(sorted(SCORERS))})"
        )
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise ValueError(f"{where}: {cls!r} is not a subclass of rewards.Scorer")  # noqa: TRY004 - a config error
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as error:
        raise ValueError(f"{where}: {class_path(cls)} {error}") from None
    for key in cls.nested_scorers:
        if isinstance(kwargs.get(key), Mapping):
            resolve_scorer_spec(kwargs[key], f"{where}.{key}")
    return cls, kwargs


def build_scorer(spec: Mapping | Scorer, where: str = "scorer") -> Scorer:
    """Build the scorer `spec` describes (see `resolve_scorer_spec`); a built `Scorer` is returned as is."""
    if isinstance(spec, Scorer):
        return spec
    cls, kwargs = resolve_scorer_spec(spec, where)
    try:
        return instantiate({"_target_": cls, **kwargs}, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__ or error  # Hydra wraps the constructor's own exception
        raise ValueError(f"{where}: building {class_path(cls)}: {type(cause).__name__}: {cause}") from cause


class ScorerError(RuntimeError):
    """A reward that could not be computed: names the term, the scorer class and the samples."""

    def __init__(self, term: str, scorer: str, sample_ids: Sequence[str], reason: str):
        self.term, self.scorer, self.sample_ids, self.reason = term, scorer, list(sample_ids), reason
        shown = (
            self.sample_ids if len(self.sample_ids) <= 8 else [*self.sample_ids[:8], f"... {len(sample_ids)} in all"]
        )
        super().__init__(f"reward term {term!r} (scorer {scorer}) {reason}; samples {shown}")
