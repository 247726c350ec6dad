"""`coevolve bench learner` (tokens/s, model FLOPs, MFU) and `coevolve bench rl-step` (the phase
times of full RL steps) on CPU at tiny shapes, printing JSON."""

from __future__ import annotations

import json

import pytest
import torch

from coevolve.bench import learner
from coevolve.cli.main import main


def test_learner_bench_reports_tokens_per_second_and_flops_from_the_cli(capsys):
    assert main(["bench", "learner", "--device", "cpu", "--repeats", "1", "--batch", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shape"] == "small" and report["dtype"] == "float32" and report["batch"]["trajectories"] == 2
    # Two trajectories of prompt 20 + plan 16 + image (64 codes and its 2 boundary tokens), each image
    # with an unconditional row of the same length ("pad" context).
    assert report["trunk_tokens_per_step"] == 2 * 2 * (20 + 16 + 66)
    assert report["trained_tokens_per_step"] == 2 * (16 + 64)
    assert report["tokens_per_s"] > 0 and report["trained_tokens_per_s"] > 0
    parts = report["model_flops_by_part"]
    assert sum(parts.values()) == report["model_flops_per_step"]
    # FlopCounterMode sees the matmuls (with the recomputed head chunks) and not CPU attention: close.
    matmuls = report["model_flops_per_step"] - parts["attention"]
    assert report["counted_flops_per_step"] == pytest.approx(matmuls, rel=0.25)
    assert report["mfu"] is None and "give --peak-tflops" in report["peak_source"]


def test_mfu_from_a_given_peak_and_from_the_gpu_table(monkeypatch):
    report = learner.learner_report(repeats=1, batch=1, peak=0.5)
    assert report["mfu"] == pytest.approx(report["achieved_tflops"] / 0.5, rel=0.01)
    for name, peak in (("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                       ("NVIDIA A100-SXM4-80GB", 312.0)):  # fmt: skip
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert learner.peak_tflops("cuda", torch.bfloat16, None)[0] == peak
    assert learner.peak_tflops("cuda", torch.float32, None)[0] is None  # the table is bf16
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    assert learner.peak_tflops("cuda", torch.bfloat16, None) == (
        None,
        "Some GPU is not in the peak table: give --peak-tflops",
    )
    with pytest.raises(ValueError, match="unknown learner bench shape 'huge'"):
        learner.learner_report(shape="huge")


@pytest.mark.slow
def test_rl_step_bench_reports_every_phase_of_a_step(tiny_checkpoint, capsys):
    argv = ["bench", "rl-step", "--model", str(tiny_checkpoint), "--steps", "1", "--weight-sync", "collective"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weight_sync"]["path"] == "collective" and report["weight_sync"]["broadcasts"] == 1
    assert [step["step"] for step in report["steps"]] == [1]
    seconds = report["steps"][0]["seconds"]
    for key in ("introspective/rollout_s", "introspective/reward_s", "reconstruction/rollout_s", "learner_s",
                "learner_update_s", "weight_sync_s", "traces_s", "eval_s", "step_s"):  # fmt: skip
        assert seconds[key] > 0, key
    assert seconds["step_s"] >= seconds["learner_s"] + seconds["weight_sync_s"]
