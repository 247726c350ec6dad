"""SFT on the tiny checkpoint: short real runs through `coevolve sft` (Trainer, checkpoints,
resume, LoRA, DeepSpeed) and the task sequences they train on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import JanusForConditionalGeneration

from coevolve.cli.main import main
from coevolve.config import compose_config, to_typed
from coevolve.data.records import shapes_records, write_records
from coevolve.model.segments import GenImage, SeenImage, Text
from coevolve.sft.data import TaskMixture, prepare_records
from coevolve.sft.tasks import TaskBuilder
from coevolve.sft.trainer import JanusSFTTrainer

SHORT = [
    "sft.max_steps=4",
    "sft.save_steps=2",
    "sft.per_device_batch_size=4",
    "sft.warmup_steps=1",
    "data.num_examples=12",
    "logging.logging_steps=1",
    "logging.progress_bar=false",
]


def _sft(tmp_path: Path, tiny_checkpoint: Path, *overrides: str, name: str = "run") -> Path:
    run_dir = tmp_path / name
    main(["sft", f"run_dir={run_dir}", f"model.path={tiny_checkpoint}", *SHORT, *overrides])
    return run_dir


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_task_sequences_score_what_each_task_trains(tiny_adapter):
    config = to_typed(compose_config([]))
    records = prepare_records(tiny_adapter, shapes_records(2, seed=3))
    builder = TaskBuilder(tiny_adapter, config.sft.loss_weights, "pad")
    t2i = builder.t2i(records[0], drop=False)
    assert [type(s) for s in t2i.sequence[-2:]] == [Text, GenImage]
    assert t2i.sequence[-2].scored and t2i.sequence[-1].scored
    judge = builder.judge(records[0], negative=True)
    assert any(isinstance(s, SeenImage) for s in judge.sequence)
    reply = tiny_adapter.tokenizer.decode(judge.sequence[-1].ids)
    assert reply.startswith(" No,") and records[0].negative_reason in reply
    assert judge.weights[-1][0] == config.sft.loss_weights.verdict_answer  # the Yes/No token
    # The tiny checkpoint describes the image first: the negative's caption, trained as captions are.
    assert tiny_adapter.self_check == "describe"
    described = [(s, w) for s, w in zip(judge.sequence, judge.weights) if w is not None]
    assert len(described) == 2 and described[0][0].scored
    description = tiny_adapter.tokenizer.decode(described[0][0].ids)
    assert description == " " + records[0].negative_caption + tiny_adapter.tokenizer.eos_token
    assert (described[0][1] == config.sft.loss_weights.caption).all()
    regen = builder.regen(records[0], drop=False)
    scored = [type(s).__name__ for s in regen.sequence if s.scored]
    assert scored == ["Text", "GenImage"]  # reflection + the correct image; the wrong image is context
    assert torch.equal(regen.sequence[-1].codes, records[0].image_codes)
    # A decoded judge example sees the VQ round trip of the same image and says the same.
    decoded = tiny_adapter.decode(records[0].negative_codes[None])[0]
    assert torch.equal(builder.judged_codes(records[0], negative=True), records[0].negative_codes)
    seen = builder.judge(records[0], negative=True, decoded=decoded)
    assert torch.equal(seen.sequence[-1].ids, judge.sequence[-1].ids)
    expected = tiny_adapter.caption_context(decoded)  # the describing turn sees the decoded image
    pixels = [[s.pixels for s in e.sequence if isinstance(s, SeenImage)][0] for e in (judge, seen)]
    assert not torch.equal(pixels[0], pixels[1])
    assert torch.equal(pixels[1], next(s.pixels for s in expected if isinstance(s, SeenImage)))
    dropped = builder.t2i(records[0], drop=True)
    prefix_ids = dropped.sequence[0].ids
    assert set(prefix_ids.tolist()) <= {tiny_adapter.spec.pad_id, tiny_adapter.spec.bos_id}
    assert [s.scored for s in dropped.sequence] == [False, True]


def test_mixture_is_a_pure_function_of_seed_and_index(tiny_adapter):
    config = to_typed(compose_config([]))
    records = prepare_records(tiny_adapter, shapes_records(4, seed=0))
    mixture = TaskMixture(records, TaskBuilder(tiny_adapter, config.sft.loss_weights, "pad"), config.sft, seed=5)
    rows = mixture.rows(400)
    assert rows[123] == mixture.draw(123)
    tasks = [row["task"] for row in rows]
    assert abs(tasks.count("t2i") / 400 - 0.35) < 0.08 and abs(tasks.count("judge") / 400 - 0.25) < 0.08
    judge_negative = [row["negative"] for row in rows if row["task"] == "judge"]
    assert 0.3 < sum(judge_negative) / len(judge_negative) < 0.7  # balanced verdicts
    seeing = [row["decoded"] for row in rows if row["task"] == "judge"]
    assert 0.3 < sum(seeing) / len(seeing) < 0.7  # sft.decoded_images: 0.5
    assert not any(row["decoded"] for row in rows if row["task"] != "judge")


def test_debris_reaches_caption_and_judge_images_only_and_is_a_function_of_the_row(tiny_adapter):
    config = to_typed(compose_config(["sft.debris_images=0.5"]))
    records = prepare_records(tiny_adapter, shapes_records(4, seed=0))
    mixture = TaskMixture(records, TaskBuilder(tiny_adapter, config.sft.loss_weights, "pad"), config.sft, seed=5)
    rows = mixture.rows(400)
    reading = [row["debris"] for row in rows if row["task"] in ("caption", "judge")]
    assert 0.3 < sum(d > 0 for d in reading) / len(reading) < 0.7 and set(reading) == set(range(7))
    assert not any(row["debris"] for row in rows if row["task"] not in ("caption", "judge"))
    row = next(row for row in rows if row["task"] == "caption" and row["debris"])

    def pixels(example):
        return next(s.pixels for s in example.sequence if isinstance(s, SeenImage))

    fragmented, again = mixture.example(row), mixture.example(dict(row))
    clean = mixture.example({**row, "debris": 0})
    assert torch.equal(pixels(fragmented), pixels(again)) and not torch.equal(pixels(fragmented), pixels(clean))
    # The same caption: fragments are no objects.
    assert torch.equal(fragmented.sequence[-1].ids, clean.sequence[-1].ids)
    # Without the key nothing changes: the rows of the default mixture carry no debris.
    plain = TaskMixture(records, TaskBuilder(tiny_adapter, config.sft.loss_weights, "pad"),
                        to_typed(compose_config([])).sft, seed=5)  # fmt: skip
    assert not any(row["debris"] for row in plain.rows(100))


def test_debris_is_refused_for_a_dataset_that_is_not_the_shapes_world(tmp_path):
    with pytest.raises(Exception, match=r"sft.debris_images=0.5 draws the shapes world's debris on its renders; "
                                        r"data.source is '/data/captions': set sft.debris_images=0"):  # fmt: skip
        to_typed(compose_config(["data.source=/data/captions", "sft.debris_images=0.5"]))
    assert to_typed(compose_config(["data.source=/data/captions"])).sft.debris_images == 0.0


@pytest.mark.slow
def test_sft_trains_saves_and_resumes_to_the_same_weights(tmp_path, tiny_checkpoint, monkeypatch):
    straight = _sft(tmp_path, tiny_checkpoint, name="straight")
    final = straight / "checkpoints" / "sft"
    summary = json.loads((straight / "sft" / "summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed_from"] is None
    assert (straight / "sft" / "config.yaml").is_file() and list((straight / "sft" / "runs").rglob("events.*"))
    model = JanusForConditionalGeneration.from_pretrained(final)  # plain transformers
    before, after = _weights(tiny_checkpoint), _weights(final)
    trained = [k for k in before if "vqmodel" not in k and not torch.equal(before[k], after[k])]
    assert len(trained) > 0.8 * len([k for k in before if "vqmodel" not in k])
    assert all(torch.equal(before[k], after[k]) for k in before if "vqmodel" in k)  # VQ tokenizer frozen
    assert model.config.vq_config.num_embeddings > 0

    # Interrupt a second run after its step-2 checkpoint, then run the same command again.
    calls = {"n": 0}
    original = JanusSFTTrainer.training_step

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(JanusSFTTrainer, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        _sft(tmp_path, tiny_checkpoint, name="resumed")
    resumed = tmp_path / "resumed"
    assert not (resumed / "checkpoints" / "sft").exists()  # no final checkpoint from a dead run
    monkeypatch.setattr(JanusSFTTrainer, "training_step", original)
    _sft(tmp_path, tiny_checkpoint, name="resumed")
    summary = json.loads((resumed / "sft" / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["global_step"] == 4
    # Same steps, same data order: the same losses after the resume point and the same weights.
    history = {
        name: [
            e["loss"]
            for e in json.loads((tmp_path / name / "sft" / "checkpoint-4" / "trainer_state.json").read_text())[
                "log_history"
            ]
            if "loss" in e
        ]
        for name in ("straight", "resumed")
    }
    assert history["resumed"][-2:] == pytest.approx(history["straight"][-2:], rel=1e-5)
    resumed_weights = _weights(resumed / "checkpoints" / "sft")
    for key, value in after.items():
        torch.testing.assert_close(resumed_weights[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sft_with_lora_saves_merged_and_adapter_checkpoints(tmp_path, tiny_checkpoint):
    merged = _sft(tmp_path, tiny_checkpoint, "sft/lora=default", "sft.learning_rate=1e-2", name="merged")
    model = JanusForConditionalGeneration.from_pretrained(merged / "checkpoints" / "sft")
    before, after = _weights(tiny_checkpoint), _weights(merged / "checkpoints" / "sft")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(("q_proj" in k or "k_proj" in k or "v_proj" in k or "o_proj" in k) for k in changed)
    assert not any("lora" in k for k in after)  # merged into the base weights
    assert model is not None

    adapter = _sft(tmp_path, tiny_checkpoint, "sft/lora=default", "sft.lora.save=adapter", name="adapter")
    out = adapter / "checkpoints" / "sft"
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    loaded = JanusForConditionalGeneration.from_pretrained(out)  # base + adapter via transformers' PEFT support
    assert any("lora_A" in name for name, _ in loaded.named_parameters())


@pytest.mark.slow
def test_sft_reads_a_records_file(tmp_path, tiny_checkpoint):
    data = write_records(shapes_records(8, seed=1), tmp_path / "data")
    run_dir = _sft(tmp_path, tiny_checkpoint, f"data.source={data}", "data.num_examples=null")
    assert json.loads((run_dir / "sft" / "summary.json").read_text())["records"] == 8


def test_sft_names_a_row_missing_a_field(tmp_path, tiny_checkpoint, capsys):
    data = write_records(shapes_records(3, seed=1), tmp_path / "data")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    del rows[1]["plan"]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(SystemExit) as exit_:
        _sft(tmp_path, tiny_checkpoint, f"data.source={data}")
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "records.jsonl" in error and "row 1" in error and "plan" in error


@pytest.mark.slow
def test_sft_on_a_deepspeed_zero2_engine(tmp_path, tiny_checkpoint):
    # Its own process, as a user runs it: DeepSpeed's process group and accelerate's state are
    # process-wide and must not leak into the other tests.
    run_dir = tmp_path / "ds"
    command = [
        sys.executable,
        "-m",
        "coevolve.cli.main",
        "sft",
        "engine=deepspeed",
        "engine.zero_stage=2",
        f"run_dir={run_dir}",
        f"model.path={tiny_checkpoint}",
        *SHORT,
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = run_dir / "sft" / "checkpoint-2"
    assert any(checkpoint.glob("global_step2/*optim_states.pt"))  # DeepSpeed's ZeRO optimizer shards
    final = run_dir / "checkpoints" / "sft"
    JanusForConditionalGeneration.from_pretrained(final)
    before, after = _weights(tiny_checkpoint), _weights(final)
    assert any(not torch.equal(before[k], after[k]) for k in before if "vqmodel" not in k)
    assert all(torch.isfinite(v).all() for v in after.values())


@pytest.mark.slow
def test_multirun_sweeps_into_one_directory_per_job(tmp_path, tiny_checkpoint):
    run_dir = tmp_path / "sweep"
    overrides = [o for o in SHORT if not o.startswith("sft.max_steps")]
    main(["sft", "-m", f"run_dir={run_dir}", f"model.path={tiny_checkpoint}", *overrides, "sft.max_steps=1,2"])
    steps = {}
    for job in ("0", "1"):
        job_dir = run_dir / "multirun" / job
        steps[job] = json.loads((job_dir / "sft" / "summary.json").read_text())["global_step"]
        assert (job_dir / "checkpoints" / "sft" / "model.safetensors").is_file()
        assert "max_steps: " + str(steps[job]) in (job_dir / "sft" / "config.yaml").read_text()
    assert steps == {"0": 1, "1": 2}


PHASES = (
    "+sft.phases=[{name: bind, max_steps: 2, learning_rate: 3e-3, lr_scheduler: constant, tasks: {t2i: 1}},"
    " {name: mix, tasks: {judge: 1}}]"
)


def _phase_log(run_dir: Path, phase: str, step: int) -> list[dict]:
    state = run_dir / "sft" / phase / f"checkpoint-{step}" / "trainer_state.json"
    return [e for e in json.loads(state.read_text())["log_history"] if "loss" in e]


@pytest.mark.slow
def test_sft_phases_train_in_order_and_a_resume_skips_a_finished_phase(tmp_path, tiny_checkpoint, monkeypatch):
    straight = _sft(tmp_path, tiny_checkpoint, PHASES, name="straight")
    summary = json.loads((straight / "sft" / "summary.json").read_text())
    assert [p["phase"] for p in summary["phases"]] == ["bind", "mix"] and summary["global_step"] == 2 + 4
    bind, mix = _phase_log(straight, "bind", 2), _phase_log(straight, "mix", 4)
    # Each phase trains its own tasks at its own rate; the second inherits sft's (max_steps 4,
    # learning rate 1e-3 with a cosine schedule).
    assert all("nll/t2i" in e and "nll/judge" not in e and e["learning_rate"] == 3e-3 for e in bind)
    assert len(mix) == 4 and all("nll/judge" in e and "nll/t2i" not in e for e in mix)
    rates = [e["learning_rate"] for e in mix]
    assert max(rates) == pytest.approx(1e-3) and rates[-1] < max(rates)
    # The second phase starts from the first one's model, and the final checkpoint is the second's.
    first = _weights(straight / "sft" / "bind" / "model")
    before, after = _weights(tiny_checkpoint), _weights(straight / "checkpoints" / "sft")
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[key], first[key]) and not torch.equal(first[key], after[key])

    # Killed in the second phase, then run again: the first phase is reused, not retrained.
    calls = {"n": 0}
    original = JanusSFTTrainer.training_step

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 + 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(JanusSFTTrainer, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        _sft(tmp_path, tiny_checkpoint, PHASES, name="resumed")
    resumed = tmp_path / "resumed"
    assert (resumed / "sft" / "bind" / "model" / "config.json").is_file()
    assert not (resumed / "checkpoints" / "sft").exists()
    monkeypatch.setattr(JanusSFTTrainer, "training_step", original)
    calls["n"] = 0
    _sft(tmp_path, tiny_checkpoint, PHASES, name="resumed")
    summary = json.loads((resumed / "sft" / "summary.json").read_text())
    phases = summary["phases"]
    assert phases[0]["reused"] and phases[1]["resumed_from"].endswith("checkpoint-2")
    assert summary["global_step"] == 2 + 4
    resumed_weights = _weights(resumed / "checkpoints" / "sft")
    for name, value in after.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=1e-5, atol=1e-6)


def test_sft_phases_are_checked_before_any_work(tmp_path, tiny_checkpoint, capsys):
    for phases, culprit in (
        ("+sft.phases=[{name: a, tasks: {t2i: 0}}]", "sft.phases[0] (a)"),
        ("+sft.phases=[{name: a}, {name: a}]", "distinct names"),
        ("+sft.phases=[{name: a}]", "sft.lora"),
    ):
        lora = ["sft/lora=default"] if culprit == "sft.lora" else []
        with pytest.raises(SystemExit) as exit_:
            _sft(tmp_path, tiny_checkpoint, phases, *lora)
        assert exit_.value.code == 2
        assert culprit in capsys.readouterr().err
        assert not (tmp_path / "run" / "sft").exists()


def test_resume_passes_over_a_checkpoint_the_trainer_did_not_finish(tmp_path):
    from coevolve.sft.run import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "absent") is None
    for step, state in ((2, "{}"), (10, '{"global_st'), (12, None)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    # 10 has a torn trainer_state.json, 12 none (killed while saving): 2 is the newest complete one.
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")


def test_a_batch_decodes_its_judge_images_together_as_one_at_a_time(tiny_adapter):
    config = to_typed(compose_config([]))
    records = prepare_records(tiny_adapter, shapes_records(6, seed=1))
    mixture = TaskMixture(records, TaskBuilder(tiny_adapter, config.sft.loss_weights, "pad"), config.sft, seed=2)
    rows = [mixture.draw(index) for index in range(60)]
    seeing = [row for row in rows if row["task"] == "judge" and row["decoded"]]
    assert len(seeing) >= 3
    batch = mixture.collate(rows)
    for row, sequence in zip(rows, batch["sequences"]):
        alone = mixture.example(row).sequence
        assert len(alone) == len(sequence)
        for mine, theirs in zip(sequence, alone):
            if isinstance(mine, SeenImage):
                # Batched convolutions round differently: a pixel may land one 8-bit level away.
                differ = (mine.pixels - theirs.pixels).abs()
                assert differ.max() <= 2 / 255 + 1e-6 and (differ > 0).float().mean() < 0.01, (row, differ.max())
            else:
                assert torch.equal(getattr(mine, "ids", getattr(mine, "codes", None)),
                                   getattr(theirs, "ids", getattr(theirs, "codes", None))), row  # fmt: skip
