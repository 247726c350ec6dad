"""Tiny random CLIP, SigLIP and LLaVA checkpoints, built once per session and saved to disk.

The scorers load them by path through the same `AutoModel`/`AutoProcessor` code a real
checkpoint goes through. Their tokenizer is a word-level one built offline with `tokenizers`.
"""

from __future__ import annotations

import pytest
import torch

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
