"""Figures of the shapes world: verifier accuracy and VQ round-trip fidelity (printed as JSON)."""

from __future__ import annotations

from coevolve.data.shapes import verifier_accuracy


def verifier_accuracy_report(n: int, seed: int) -> dict:
    """Verifier accuracy on `n` seeded (prompt, render) pairs, half satisfying, balanced over tags."""
    return {"what": "verifier accuracy on clean renders", **verifier_accuracy(n=n, seed=seed)}


def vq_fidelity_report(model_path: str, n: int, seed: int) -> dict:
    """Share of `n` ground-truth renders the verifier still accepts after VQ encode -> decode."""
    from coevolve.model.images import decode_images, encode_images, load_janus

    model, processor = load_janus(model_path)

    def round_trip(images):
        return decode_images(model, processor, encode_images(model, processor, images))

    result = verifier_accuracy(n=n, seed=seed, transform=round_trip, positives_only=True)
    return {"what": "verifier acceptance of renders after VQ encode -> decode", "model": model_path, **result}
