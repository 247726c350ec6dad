"""Shared fixtures: one tiny checkpoint per test session, and one short SFT of it.

Set COEVOLVE_TINY_CHECKPOINT to an existing `coevolve bootstrap tiny` output to reuse it
across sessions while developing; by default it is built once into pytest's temp dir.
Set COEVOLVE_SFT_CHECKPOINT to an SFT output (`coevolve sft recipe=shapes`'s checkpoints/sft) to
use it; by default a 4-step SFT run of the shapes recipe from the tiny checkpoint is made once per
session (the tests that use it check machinery, not what SFT taught). `short_rl_run` is a 3-step
`coevolve rl recipe=shapes` from that checkpoint at tiny sizes (`short_rl_overrides`), made once
per session for the tests that read what a run writes. `tiny_clip_dir`, `tiny_siglip_dir` and
`tiny_llava_dir` are tiny random CLIP, SigLIP and LLaVA checkpoints in Hugging Face format, for the
scorers that load a model by path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from coevolve.bootstrap.tiny import MANIFEST, build_tiny_checkpoint

    given = os.environ.get("COEVOLVE_TINY_CHECKPOINT")
    if given:
        path = Path(given)
        if not (path / MANIFEST).is_file():
            raise RuntimeError(f"COEVOLVE_TINY_CHECKPOINT={given} is not a `coevolve bootstrap tiny` output")
        return path
    path = tmp_path_factory.mktemp("checkpoints") / "tiny"
    build_tiny_checkpoint(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from coevolve.model.images import load_janus

    return load_janus(str(tiny_checkpoint))


@pytest.fixture(scope="session")
def tiny_adapter(tiny_checkpoint):
    from coevolve.model.adapter import JanusAdapter

    return JanusAdapter.from_pretrained(tiny_checkpoint)


SHORT_SFT = [
    "recipe=shapes",
    "sft.phases=[]",  # one short phase, not the recipe's two
    "sft.max_steps=4",
    "sft.save_steps=4",
    "sft.per_device_batch_size=4",
    "sft.warmup_steps=1",
    "data.num_examples=12",
    "logging.progress_bar=false",
    "logging.tensorboard=false",
]


@pytest.fixture(scope="session")
def sft_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    given = os.environ.get("COEVOLVE_SFT_CHECKPOINT")
    if given:
        path = Path(given)
        if not (path / "config.json").is_file():
            raise RuntimeError(f"COEVOLVE_SFT_CHECKPOINT={given} is not a checkpoint directory")
        return path
    from coevolve.config import compose_config, to_typed
    from coevolve.sft.run import FINAL, run_sft

    run_dir = tmp_path_factory.mktemp("sft_for_rollout")
    config = to_typed(compose_config([*SHORT_SFT, f"run_dir={run_dir}", f"model.path={tiny_checkpoint}"]))
    run_sft(config, run_dir)
    return run_dir / FINAL


@pytest.fixture(scope="session")
def sft_adapter(sft_checkpoint):
    from coevolve.model.adapter import JanusAdapter

    return JanusAdapter.from_pretrained(sft_checkpoint)


INTRO = "rl.programs.introspective.rollout"
RECON = "rl.programs.reconstruction.rollout"


def short_rl_overrides(run_dir, checkpoint, steps: int = 3) -> list[str]:
    """A `coevolve rl recipe=shapes` of `steps` steps at tiny sizes (a checkpoint every step)."""
    return [
        "recipe=shapes",
        f"run_dir={run_dir}",
        f"rl.checkpoint={checkpoint}",
        f"{INTRO}.num_prompts=2",
        f"{INTRO}.num_generations=2",
        f"{INTRO}.num_workers=1",
        f"{INTRO}.max_plan_tokens=6",
        f"{INTRO}.max_verdict_tokens=4",
        f"{INTRO}.max_reflection_tokens=4",
        f"{RECON}.num_prompts=1",
        f"{RECON}.num_generations=2",
        f"{RECON}.num_workers=1",
        f"{RECON}.max_caption_tokens=6",
        f"rl.stages=[{{name: coevolve, steps: {steps}}}]",
        "rl.save_steps=1",
        "rl.save_total_limit=null",
        "rl.eval_steps=0",
        "rl.learner.num_cpus=1",
        "rl.learner.micro_batch_size=4",
        "rl.learner.optimizer.learning_rate=1e-3",
        "eval.num_prompts_per_category=1",
        "eval.num_heldout_renders=4",
        "eval.num_caption_images=2",
        "logging.tensorboard=false",
    ]


@pytest.fixture(scope="session")
def rl_overrides():
    """`short_rl_overrides`, for tests that vary the short run."""
    return short_rl_overrides


@pytest.fixture(scope="session")
def short_rl_run(sft_checkpoint, tmp_path_factory) -> tuple[Path, dict]:
    """(run directory, summary) of one short RL run; tests copy it before changing anything in it."""
    from coevolve.config import compose_config, to_typed
    from coevolve.rl.run import run_rl

    run_dir = tmp_path_factory.mktemp("rl") / "run"
    summary = run_rl(to_typed(compose_config([*short_rl_overrides(run_dir, sft_checkpoint)])), run_dir)
    return run_dir, summary


# -- tiny random CLIP, SigLIP and LLaVA checkpoints -------------------------------------------
# The scorers load them by path through the same `AutoModel`/`AutoProcessor` code a real checkpoint
# goes through (tests/rewards, and the published recipes' tests in tests/recipes). Their tokenizer
# is a word-level one built offline with `tokenizers`.

WORDS = [
    "a",
    "photo",
    "of",
    "an",
    "and",
    "the",
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "circle",
    "square",
    "triangle",
    "cross",
    "circles",
    "squares",
    "triangles",
    "crosses",
    "one",
    "two",
    "three",
    "four",
    "left",
    "right",
    "above",
    "below",
    "Yes",
    "No",
    "yes",
    "no",
    "Does",
    "this",
    "image",
    "match",
    "prompt",
    "Answer",
    "or",
    "USER",
    "ASSISTANT",
]
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
PAD, UNK, BOS, EOS, IMAGE_TOKEN = range(5)


def tiny_tokenizer(max_length: int, eos_at_end: bool = True):
    """Word-level tokenizer over `WORDS`; `eos_at_end` closes every text with </s> (CLIP pools there),
    which a chat model's prompt must not have."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.add_special_tokens(SPECIALS)
    single = "<s> $A </s>" if eos_at_end else "<s> $A"
    backend.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", BOS), ("</s>", EOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=max_length,
        extra_special_tokens={"image_token": "<image>"},
    )


def _small(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, **extra)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(16)
    config = CLIPConfig(
        text_config=_small(
            vocab_size=len(tokenizer), max_position_embeddings=16, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS
        ),
        vision_config=_small(image_size=32, patch_size=8),
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory):
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(16)
    config = SiglipConfig(
        text_config=_small(
            vocab_size=len(tokenizer),
            max_position_embeddings=16,
            pad_token_id=PAD,
            bos_token_id=BOS,
            eos_token_id=EOS,
            projection_size=32,
        ),
        vision_config=_small(image_size=32, patch_size=8),
    )
    path = tmp_path_factory.mktemp("siglip")
    SiglipModel(config).save_pretrained(path)
    image_processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """A LLaVA (tiny CLIP vision tower + tiny Llama) with a chat template: a generic HF VLM."""
    import torch
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(128, eos_at_end=False)
    config = LlavaConfig(
        vision_config=_small(model_type="clip_vision_model", image_size=32, patch_size=8),
        text_config=_small(
            model_type="llama",
            vocab_size=len(tokenizer),
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=PAD,
            bos_token_id=BOS,
            eos_token_id=EOS,
        ),
        image_token_id=IMAGE_TOKEN,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    path = tmp_path_factory.mktemp("llava")
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path
