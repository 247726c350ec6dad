"""The text the tiny tokenizer is trained on: everything the shapes world says.

Prompts, plans, captions and violation reasons of seeded examples, plus the phrases of the
introspective format (the self-check question, Yes/No verdicts, reflections), so that each
of them encodes into few tokens.
"""

from __future__ import annotations

from coevolve.data.shapes import balanced_examples

# The introspective loop's fixed phrases (DESIGN.md section 1); later parts build their
# prompts from these words, and a word missing here still encodes byte by byte.
_FORMAT_PHRASES = (
    "Does this image match the prompt? Answer Yes or No.",
    "Yes, the image matches the prompt.",
    "No, the image does not match the prompt because",
    "Reflection: the image is wrong because",
    "Draw the image again, correcting the mistake.",
    "Describe this image.",
    "Generate an image of",
)


def tokenizer_corpus(seed: int, num_examples: int = 3000) -> list[str]:
    """A deterministic list of texts covering the world's language (for a given `seed`)."""
    texts = list(_FORMAT_PHRASES)
    for example in balanced_examples(num_examples, seed):
        texts += [example.prompt, example.plan, example.caption]
        if example.violation:
            texts.append(example.violation)
    return texts
