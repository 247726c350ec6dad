"""`coevolve sft`: the SFT warm start — setup → train → save → cleanup.

Writes under the run directory:
- `sft/config.yaml`: the resolved config of this run;
- `sft/checkpoint-N/`: resumable Trainer checkpoints (model in HF format + optimizer, scheduler,
  RNG and data position); `sft/runs/`: TensorBoard events;
- with `sft.phases`, each phase's Trainer checkpoints and events under `sft/PHASE/`, and each
  earlier phase's model (where the next one starts; a resumed run skips a phase that has it) in
  `sft/PHASE/model/`;
- `checkpoints/sft/`: the final model in Hugging Face format (merged, or a PEFT adapter over the
  untouched base), loadable by plain transformers; it appears only once complete.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
from transformers.trainer import TRAINER_STATE_NAME
from trl import SFTConfig as TRLSFTConfig

from coevolve.config.schema import TASKS, Config, SFTConfig
from coevolve.learner.engine import lora_peft_config
from coevolve.model import JanusAdapter
from coevolve.sft.data import TaskMixture, load_sft_records, prepare_records
from coevolve.sft.tasks import TaskBuilder
from coevolve.sft.trainer import JanusSFTTrainer
from coevolve.utils.distributed import single_process_distributed_env
from coevolve.utils.fs import atomic_output_dir, atomic_write_text

FINAL = Path("checkpoints") / "sft"
PHASE_MODEL = "model"  # an earlier phase's model, RUN_DIR/sft/PHASE/model


def deepspeed_config(zero_stage: int) -> dict:
    """A DeepSpeed config the HF Trainer completes ("auto") from its own arguments. No "optimizer":
    the Trainer's torch AdamW is used, so nothing needs DeepSpeed's compiled CPU ops."""
    zero = {"stage": zero_stage}
    if zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # else saved tensors are empty shards
    return {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": "auto"},
    }


def training_arguments(config: Config, output_dir: Path) -> TRLSFTConfig:
    sft, logging = config.sft, config.logging
    return TRLSFTConfig(
        output_dir=str(output_dir),
        max_steps=sft.max_steps,
        per_device_train_batch_size=sft.per_device_batch_size,
        gradient_accumulation_steps=sft.gradient_accumulation_steps,
        learning_rate=sft.learning_rate,
        lr_scheduler_type=sft.lr_scheduler,
        warmup_steps=sft.warmup_steps,
        weight_decay=sft.weight_decay,
        max_grad_norm=sft.max_grad_norm,
        activation_checkpointing=sft.activation_checkpointing,
        save_strategy="steps",
        save_steps=sft.save_steps,
        save_total_limit=sft.save_total_limit,
        logging_steps=logging.logging_steps,
        report_to=["tensorboard"] if logging.tensorboard else "none",
        disable_tqdm=not logging.progress_bar,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.model.dtype == "bfloat16",
        use_cpu=not torch.cuda.is_available(),
        deepspeed=deepspeed_config(config.engine.zero_stage) if config.engine.name == "deepspeed" else None,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
    )


def _setup_model(config: Config) -> JanusAdapter:
    dtype = torch.bfloat16 if config.model.dtype == "bfloat16" else torch.float32
    adapter = JanusAdapter.from_pretrained(config.model.path, dtype=dtype)
    # The VQ tokenizer defines the image vocabulary: training it would move every code.
    adapter.model.model.vqmodel.requires_grad_(False)
    adapter.model.train()
    return adapter


def _peft_config(config: Config):
    return None if config.sft.lora is None else lora_peft_config(config.sft.lora)


def _save_final(trainer: JanusSFTTrainer, adapter: JanusAdapter, config: Config, path: Path) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model)
    with atomic_output_dir(path, overwrite=True) as staging:
        if config.sft.lora is not None and config.sft.lora.save == "merged":
            merged = model.merge_and_unload()
            merged.save_pretrained(staging)
        elif config.sft.lora is not None:
            # A PEFT adapter; transformers loads it (base + adapter) from `adapter_config.json`,
            # whose base_model_name_or_path is the absolute base checkpoint path.
            model.peft_config["default"].base_model_name_or_path = str(Path(config.model.path).absolute())
            model.save_pretrained(staging)
        else:
            trainer.save_model(str(staging))
        adapter.processor.save_pretrained(staging)


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-N` under `output_dir` that the Trainer finished writing.

    The Trainer writes a checkpoint in place and its `trainer_state.json` last, so a run killed
    while saving leaves a newer folder without a readable state; resuming from it would fail."""
    if not output_dir.is_dir():
        return None
    steps = sorted(
        (int(path.name.split("-")[1]), path)
        for path in output_dir.glob("checkpoint-*")
        if path.is_dir() and path.name.split("-")[1].isdigit()
    )
    for _, path in reversed(steps):
        try:
            json.loads((path / TRAINER_STATE_NAME).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        return str(path)
    return None


def _train_phase(
    config: Config, sft: SFTConfig, adapter: JanusAdapter, prepared: list, output_dir: Path, final: Path
) -> dict:
    """Train one phase of `sft` on `adapter`'s model and save it, complete, at `final`."""
    phase_config = dataclasses.replace(config, sft=sft)
    builder = TaskBuilder(adapter, sft.loss_weights, config.model.unconditional)
    length = sft.max_steps * sft.per_device_batch_size * sft.gradient_accumulation_steps
    mixture = TaskMixture(prepared, builder, sft, seed=config.seed)
    trainer = JanusSFTTrainer(
        model=adapter.model,
        args=training_arguments(phase_config, output_dir),
        train_dataset=mixture.rows(length),
        data_collator=mixture.collate,
        processing_class=adapter.processor,
        peft_config=_peft_config(phase_config),
        spec=adapter.spec,
    )
    last = last_complete_checkpoint(output_dir) if sft.resume else None
    result = trainer.train(resume_from_checkpoint=last)
    _save_final(trainer, adapter, phase_config, final)
    return {"resumed_from": last, "global_step": trainer.state.global_step, "train_loss": result.training_loss}


def run_sft(config: Config, run_dir: Path) -> dict:
    """Train from `config.model.path` on the task mixture, phase by phase; returns a summary (also
    `sft/summary.json`)."""
    started = time.time()
    output_dir = run_dir / "sft"
    output_dir.mkdir(parents=True, exist_ok=True)
    phases = config.sft.phase_configs()
    weights = {task: sum(sft.tasks.weights()[task] for _, sft in phases) for task in TASKS}
    adapter = _setup_model(config)
    records = load_sft_records(config.data, config.seed, weights, adapter.self_check)
    # The VQ tokenizer is frozen in every phase, so the records' image codes are computed once.
    prepared = prepare_records(adapter, records)
    data_seconds = time.time() - started
    if config.engine.name == "deepspeed":
        single_process_distributed_env()

    start = config.model.path
    done = []
    for index, (name, sft) in enumerate(phases):
        last_phase = index == len(phases) - 1
        phase_dir = output_dir if name is None else output_dir / name
        final = run_dir / FINAL if last_phase else phase_dir / PHASE_MODEL
        if not last_phase and sft.resume and (final / "config.json").is_file():
            # An earlier phase that finished (all its steps: the model is saved only then); its
            # model is where the next one starts.
            done.append({"phase": name, "checkpoint": str(final), "reused": True, "global_step": sft.max_steps})
        else:
            phase_started = time.time()
            if adapter is None:
                adapter = _setup_model(dataclasses.replace(config, model=dataclasses.replace(config.model, path=start)))
            result = _train_phase(config, sft, adapter, prepared, phase_dir, final)
            entry = {"phase": name, "checkpoint": str(final), **result}
            done.append({**entry, "seconds": round(time.time() - phase_started, 1)})
        start, adapter = str(final), None

    summary = {
        "checkpoint": str(run_dir / FINAL),
        "resumed_from": done[-1].get("resumed_from"),
        "global_step": sum(phase["global_step"] for phase in done),
        "train_loss": done[-1].get("train_loss"),
        "records": len(records),
        "data_seconds": round(data_seconds, 1),
        "seconds": round(time.time() - started, 1),
    }
    if config.sft.phases:
        summary["phases"] = done
    atomic_write_text(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
