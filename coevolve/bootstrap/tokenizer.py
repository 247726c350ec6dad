"""A byte-level BPE text tokenizer for the tiny checkpoint, with the tokens Janus needs.

Janus-Pro ships a 100k-entry BPE; the tiny model only ever reads and writes the shapes
world's language, so a small vocabulary trained on that world keeps the LM head cheap.
Byte-level fallback means any text still encodes (as more tokens), as with a real tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Janus-Pro's own spellings, so prompts and chat templates written for the real model work here.
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
IMAGE_TOKEN = "<image_placeholder>"
BOI = "<begin_of_image>"
EOI = "<end_of_image>"
SPECIAL_TOKENS = (BOS, EOS, PAD, IMAGE_TOKEN, BOI, EOI)
# Role markers of Janus' chat format: whole tokens, so a turn boundary is never split.
ROLE_TOKENS = ("<|User|>", "<|Assistant|>")


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it as a transformers tokenizer.

    The result prepends BOS to every encoded text (as Janus' Llama tokenizer does) and exposes
    `image_token`, `boi_token` and `eoi_token`, which `JanusProcessor` reads.
    Training is deterministic for the same `texts` in the same order.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    backend.add_tokens(list(ROLE_TOKENS))
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        model_max_length=model_max_length,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "boi_token": BOI, "eoi_token": EOI},
    )
