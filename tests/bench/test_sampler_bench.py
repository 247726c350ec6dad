"""`coevolve bench sampler` measures both samplers on the same inputs and reports greedy equality."""

from __future__ import annotations

import json

import pytest
import torch

from coevolve.bench.sampler import SHAPES, compare, decode_bandwidth_bound, random_janus, random_prompts, sampler_report
from coevolve.cli.main import main


def test_tiny_case_from_the_cli(tiny_checkpoint, capsys):
    assert main(["bench", "sampler", "--model", str(tiny_checkpoint), "--cases", "tiny,janus-pro-1b", "--repeats", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    case = report["cases"]["tiny"]
    assert case["prompts"] == 8 and len(set(case["prompt_tokens"])) > 1
    assert case["greedy_identical"] is True and case["greedy_equal_token_fraction"] == 1.0
    assert case["images_per_s"]["coevolve"] > 0 and case["images_per_s"]["transformers"] > 0
    assert case["speedup"] == pytest.approx(case["images_per_s"]["coevolve"] / case["images_per_s"]["transformers"], rel=0.01)
    assert "needs --device cuda" in report["skipped"]["janus-pro-1b"]


def test_random_model_groups_match_transformers_expansion():
    shape = SHAPES["mid"].__class__(hidden=64, intermediate=128, layers=2, heads=4, vocab=300, image_size=32,
                                    patch_size=8, codebook=128, vq_embed_dim=8)
    model, spec = random_janus(shape, torch.float32, "cpu", seed=3)
    case = compare(model, spec, random_prompts([9, 14], spec.text_vocab_size, 0), n=3, guidance=4.0, repeats=1, device="cpu")
    assert case["greedy_identical"] is True and case["images_per_prompt"] == 3
    bound = decode_bandwidth_bound(model, spec, rows=12, prefix=14, bandwidth=1e10)
    assert bound["decode_seconds_lower_bound"] > 0


def test_bad_cases_are_named(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"unknown sampler bench case\(s\) \['huge'\]"):
        sampler_report(str(tiny_checkpoint), cases=("huge",))
    with pytest.raises(ValueError, match="need --model DIR"):
        sampler_report(None, cases=("tiny",))
