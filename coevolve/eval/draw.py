"""`draw_images`: plain text-to-image sampling for the benchmark suites (GenEval, DPG-Bench).

No plan and no self-check: the prompt goes into the checkpoint's image context
(`JanusAdapter.image_prompt`, the user turn and the assistant tag, as Janus-Pro generates) and one
image is drawn per row with CFG. Row r draws from its own generator seeded with `seeds[r]`
(`coevolve.model.sampling`), so an image depends on its prompt and seed, not on `batch_size` or on
the other prompts (up to the floating-point differences of batched arithmetic).
"""

from __future__ import annotations

from collections.abc import Iterator

from PIL import Image
from tqdm import tqdm

from coevolve.model.adapter import JanusAdapter
from coevolve.model.guidance import Guidance
from coevolve.model.sampling import Sampling, row_generators


def draw_images(
    adapter: JanusAdapter,
    prompts: list[str],
    seeds: list[int],
    guidance: Guidance,
    sampling: Sampling,
    batch_size: int,
    desc: str = "images",
) -> Iterator[Image.Image]:
    """Yield one decoded image (the checkpoint's size) per row `(prompts[r], seeds[r])`, in row
    order; `batch_size` rows per model call (each twice with CFG)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts for {len(seeds)} seeds")
    contexts = {prompt: adapter.image_prompt(prompt) for prompt in dict.fromkeys(prompts)}
    with tqdm(total=len(prompts), desc=desc, unit="image", disable=None) as progress:
        for start in range(0, len(prompts), batch_size):
            rows = prompts[start : start + batch_size]
            drawn = adapter.sample_images(
                [contexts[prompt] for prompt in rows],
                guidance=guidance,
                sampling=sampling,
                generator=row_generators(seeds[start : start + batch_size]),
            )
            yield from adapter.decode(drawn)
            progress.update(len(rows))
