"""`clip_score`: prompt-image cosine with a CLIP/SigLIP-type model loaded by path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rewards import ClipScore
from rewards.check import shapes_pairs

PAIRS = shapes_pairs(6, seed=1)


@pytest.mark.parametrize("model", ["tiny_clip_dir", "tiny_siglip_dir"])
def test_clip_score_is_the_models_own_cosine(model, request):
    from transformers import AutoModel, AutoProcessor

    path = request.getfixturevalue(model)
    scores = np.array(ClipScore(model_path=str(path), batch_size=5).score(PAIRS).scores)
    assert ((scores >= -1) & (scores <= 1)).all() and scores.std() > 0
    model_, processor = AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path)
    length = model_.config.text_config.max_position_embeddings
    with torch.no_grad():
        images = model_.get_image_features(
            **processor(images=[t.image("image") for t in PAIRS], return_tensors="pt")
        ).pooler_output
        texts = model_.get_text_features(
            **processor(
                text=[t.prompt for t in PAIRS],
                padding="max_length",
                max_length=length,
                truncation=True,
                return_tensors="pt",
            )
        ).pooler_output
    np.testing.assert_allclose(
        scores, torch.nn.functional.cosine_similarity(images, texts).numpy(), rtol=1e-4, atol=1e-6
    )
    one_by_one = ClipScore(model_path=str(path), batch_size=1).score(PAIRS).scores
    np.testing.assert_allclose(one_by_one, scores, rtol=1e-4, atol=1e-6)


def test_not_a_dual_encoder_is_named(tiny_llava_dir, tmp_path):
    with pytest.raises(ValueError, match="is not a dual encoder: no get_text_features"):
        ClipScore(model_path=str(tiny_llava_dir))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ClipScore(model_path=str(tmp_path))
