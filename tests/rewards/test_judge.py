"""`yes_no_judge`: P(yes) from the first answer token, for a Janus checkpoint and a generic HF VLM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coevolve.model.introspection import JUDGE_QUESTION
from coevolve.model.sampling import GREEDY
from rewards import FINAL, YesNoJudge
from rewards.check import shapes_pairs

PAIRS = shapes_pairs(6, seed=5)


def test_janus_judge_is_the_adapters_constrained_first_token(tiny_checkpoint, tiny_adapter):
    judge = YesNoJudge(model_path=str(tiny_checkpoint), batch_size=4)
    scores = np.array(judge.score(PAIRS).scores)
    # The tiny checkpoint describes the image before answering; a judge reward describes greedily.
    expected = tiny_adapter.judge([t.image("image") for t in PAIRS], [t.prompt for t in PAIRS], sampling=GREEDY)
    expected = expected.p_yes.numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert ((scores > 0) & (scores < 1)).all()
    one_by_one = YesNoJudge(model_path=str(tiny_checkpoint), batch_size=1, segment=FINAL).score(PAIRS).scores
    np.testing.assert_allclose(one_by_one, scores, rtol=1e-4)


def test_generic_vlm_reads_p_yes_from_its_first_generated_token(tiny_llava_dir):
    """Checked against transformers' own `generate`: its first-step logits, restricted to Yes/No."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    judge = YesNoJudge(model_path=str(tiny_llava_dir), batch_size=4)
    scores = np.array(judge.score(PAIRS).scores)
    assert ((scores > 0) & (scores < 1)).all() and scores.std() > 0

    processor = AutoProcessor.from_pretrained(tiny_llava_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir).eval()
    tokenizer = processor.tokenizer
    yes = [tokenizer.convert_tokens_to_ids(w) for w in ("Yes", "yes")]
    no = [tokenizer.convert_tokens_to_ids(w) for w in ("No", "no")]
    assert sorted(judge.backend.yes_ids) == sorted(yes) and sorted(judge.backend.no_ids) == sorted(no)
    for trajectory, score in zip(PAIRS, scores):
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": JUDGE_QUESTION.format(prompt=trajectory.prompt)},
                ],
            }
        ]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text.endswith("ASSISTANT:")
        inputs = processor(images=[trajectory.image("image")], text=[text], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True
            )
        probs = out.logits[0][0].float().softmax(-1)
        assert score == pytest.approx(float(probs[yes].sum() / (probs[yes].sum() + probs[no].sum())), rel=1e-4)


def test_generic_vlm_batches_with_left_padding(tiny_llava_dir):
    batched = YesNoJudge(model_path=str(tiny_llava_dir), batch_size=12).score(PAIRS).scores
    single = YesNoJudge(model_path=str(tiny_llava_dir), batch_size=1).score(PAIRS).scores
    np.testing.assert_allclose(batched, single, rtol=1e-4)


def test_bad_judge_configs_are_named(tmp_path, tiny_llava_dir):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        YesNoJudge(model_path=str(tmp_path))
    with pytest.raises(ValueError, match=r"share first tokens"):
        YesNoJudge(model_path=str(tiny_llava_dir), answers=("Yes", "yes"))
    with pytest.raises(ValueError, match=r"must contain \{prompt\}"):
        YesNoJudge(model_path=str(tiny_llava_dir), question="Is this good?")
