"""The shapes world: coloured shapes, GenEval prompts about them, and a verifier.

A small procedural world that lets the whole method run, and be measured, on a CPU
(DESIGN.md section 4). Modules, in the order data flows:

- ``scene``     vocabulary (shapes, GenEval's colours), ``ShapeObject`` / ``Scene``, ``render``
- ``relations`` GenEval's ``relative_position``
- ``layout``    random well-spaced boxes, boxes in a given relation
- ``metadata``  GenEval metadata builders, ``TAGS``, ``validate_metadata``
- ``describe``  captions and plans of a scene
- ``prompts``   seeded ``Example`` s: ``sample_example``, ``balanced_examples``
- ``verifier``  ``detect`` / ``evaluate`` / ``verify`` with GenEval's semantics
- ``dataset``   ``shapes_dataset``: the world as a ``datasets.Dataset``
- ``accuracy``  ``verifier_accuracy`` on clean or transformed renders, ``degrade``, ``add_debris``
"""

from .accuracy import add_debris, degrade, robustness_report, verifier_accuracy
from .describe import caption, plan
from .metadata import TAGS, validate_metadata
from .prompts import Example, balanced_examples, derive_seed, sample_example
from .relations import POSITION_THRESHOLD, RELATIONS, relative_position
from .scene import BACKGROUND, COLOR_NAMES, COLORS, IMAGE_SIZE, SHAPES, Scene, ShapeObject, render
from .verifier import ClauseResult, Detection, Verdict, as_verifiable, detect, evaluate, load_image, verify


def __getattr__(name: str):
    # ``datasets`` takes a second to import; only code that builds the dataset should pay it.
    if name in ("FEATURES", "shapes_dataset"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKGROUND", "COLORS", "COLOR_NAMES", "IMAGE_SIZE", "POSITION_THRESHOLD", "RELATIONS",
    "SHAPES", "TAGS", "FEATURES",
    "ClauseResult", "Detection", "Example", "Scene", "ShapeObject", "Verdict",
    "add_debris", "as_verifiable", "balanced_examples", "caption", "degrade", "derive_seed", "detect",
    "evaluate", "load_image", "plan", "relative_position", "render", "robustness_report", "sample_example",
    "shapes_dataset", "validate_metadata", "verifier_accuracy", "verify",
]
