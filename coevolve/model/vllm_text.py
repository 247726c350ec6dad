"""Text segments drawn by vLLM: an optional backend for `JanusAdapter.sample_text`.

Selected by `rollout.text_backend: vllm` (coevolve/rollout/config.py); needs the optional extra
`pip install 'coevolve[vllm]'` (CPU-only machines: README, "vLLM backend"). The native sampler
(`sampler.py`) stays the default, and the only one for image tokens.

vLLM has no Janus model, but every text segment (plan, verdict reason, reflection, caption) is
Janus's Llama trunk + LM head continuing a context whose input embeddings may hold image features
(vision-encoder features of a seen image, generation embeddings of a drawn image's codes). So:

- vLLM serves the trunk + LM head as a `LlamaForCausalLM`: `export_language_model` writes its
  config and tokenizer, the engine starts on dummy weights (`load_format="dummy"`) and `refresh`
  copies the adapter's tensors in — the weights never touch the disk;
- each context's input embeddings are computed by the adapter (`packing.embed`: token
  embeddings, vision features, generation embeddings) and handed to vLLM as prompt embeddings
  (`enable_prompt_embeds=True`, prompts `{"prompt_embeds": (T, D) tensor}`);
- vLLM samples the continuation with the native sampler's settings: temperature, top-k, top-p,
  `max_tokens`, stopping at EOS, a stop id or a stop string (the stop token kept in the ids), the
  image-span ids forbidden (`allowed_token_ids`: every other text id);
- with `logprobs=0` and `logprobs_mode="processed_logprobs"` vLLM returns each drawn token's
  log-prob under the distribution it was drawn from (after the allowed-ids mask, temperature,
  top-k and top-p) — what `sampler.py` records, and what the learner's importance-sampling
  correction compares its own log-probs with;
- `refresh()` after every weight update (the rollout worker calls it from `set_weights` and
  `receive_weights`): the trunk + head are reloaded in place through vLLM's
  `collective_rpc("reload_weights", weights_iterator=...)` (which re-runs vLLM's post-load
  processing, e.g. the CPU backend's packed GEMM weights), then its prefix cache is dropped.

How it departs from the native sampler:

- the numbers come from vLLM's kernels (attention, GEMMs, its sampler): on the tiny checkpoint in
  float32 greedy text equals the native sampler's token for token and the log-probs agree to
  ~1e-5, but in bf16, or at a near-tie, they can differ. The recorded log-probs are vLLM's; the
  learner recomputes its own and corrects the mismatch with its importance-sampling weights
  (coevolve/learner/losses.py), which is what that correction is for;
- randomness: each row is one vLLM request seeded from the row's generator (one 62-bit draw), so
  a row's text depends on its own seed, not on its batch or worker, but it is another stream than
  the native inverse-CDF draws: the same distribution, different samples;
- greedy (temperature 0): vLLM drops top-k/top-p, so the recorded log-prob is the full
  distribution's at temperature 1 even when top-k/top-p are set (the native sampler applies them);
- stop strings are matched in vLLM's incrementally detokenized text: a request ends at the first
  token inside which a stop string ends — the token transformers' `StopStringCriteria` stops at;
- the engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, set unless already set),
  next to the adapter, so a rollout worker holds the trunk twice (its policy and vLLM's copy).
  Starting it seeds torch's global generator (vLLM's `seed`, 0), and vLLM's CPU worker turns
  `torch.set_num_threads` into a no-op for the process; the threads are those torch had (Ray sets
  them from the actor's `num_cpus`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import JanusForConditionalGeneration, PreTrainedTokenizerBase

from coevolve.model.packing import embed, pack
from coevolve.model.sampler import TextSample, _check_room
from coevolve.model.sampling import DEFAULT_SAMPLING, Generators, Sampling
from coevolve.model.segments import Sequence

INSTALL = "pip install 'coevolve[vllm]'"
# `vllm.LLM` arguments the backend sets itself: `VLLMText(**llm_kwargs)` may not override them.
OWNED = ("model", "tokenizer", "enable_prompt_embeds", "logprobs_mode", "load_format", "max_model_len", "dtype")
_SEED_BOUND = 2**62


def import_vllm():
    """The `vllm` module, or an ImportError naming the extra that installs it."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            f"the vLLM text backend (rollout.text_backend=vllm) needs vLLM, an optional extra: {INSTALL} "
            f"(CPU-only machines: see the README, 'vLLM backend'); import failed with: {error}"
        ) from error
    return vllm


def language_model_state(model: JanusForConditionalGeneration) -> dict[str, torch.Tensor]:
    """Janus's trunk + LM head under `LlamaForCausalLM`'s names (`model.*`, `lm_head.weight`)."""
    state = {f"model.{key}": value for key, value in model.model.language_model.state_dict().items()}
    state["lm_head.weight"] = model.lm_head.weight
    return state


def export_language_model(
    model: JanusForConditionalGeneration, tokenizer: PreTrainedTokenizerBase, path: str | Path
) -> Path:
    """Write the config (Janus's text config as a `LlamaForCausalLM`, embeddings and head untied) and
    the tokenizer of the trunk + LM head at `path`; the weights follow in memory (`language_model_state`)."""
    from transformers import LlamaConfig

    text = model.config.text_config
    if text.model_type != "llama":
        raise ValueError(f"the vLLM text backend serves a Llama trunk; this checkpoint's is {text.model_type!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig.from_dict(text.to_dict())
    config.architectures = ["LlamaForCausalLM"]
    config.tie_word_embeddings = False  # Janus may tie them; vLLM then gets both tensors by name
    config.dtype = model.dtype
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _row_seeds(generator: torch.Generator | Generators | None, rows: int) -> list[int]:
    """One vLLM request seed per row: from each row's own generator, from the one generator, or
    (None) from torch's global generator."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randint(0, _SEED_BOUND, (rows,), generator=generator).tolist()
    if len(generator) != rows:
        raise ValueError(f"{len(generator)} row generators for {rows} rows")
    return [int(torch.randint(0, _SEED_BOUND, (1,), generator=g)) for g in generator]


class VLLMText:
    """`sample_text` with `sampler.sample_text`'s contract, drawn by a vLLM engine serving the
    adapter's trunk + LM head (see the module docstring). `llm_kwargs` go to `vllm.LLM` (e.g.
    `gpu_memory_utilization`, `kv_cache_memory_bytes`, `enforce_eager`, `max_num_seqs`)."""

    def __init__(self, adapter, **llm_kwargs: Any):
        vllm = import_vllm()
        owned = sorted(set(llm_kwargs) & set(OWNED))
        if owned:
            raise ValueError(f"vLLM text backend: {owned} are set by the backend itself (it sets {list(OWNED)})")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.adapter = adapter
        spec = adapter.spec
        self._vllm = vllm
        self._dir = tempfile.TemporaryDirectory(prefix="coevolve-vllm-")
        export_language_model(adapter.model, adapter.tokenizer, self._dir.name)
        image_span = set(spec.image_span_ids)
        self.allowed_ids = [i for i in range(spec.text_vocab_size) if i not in image_span]
        on_cpu = adapter.model.device.type == "cpu"
        defaults: dict[str, Any] = {
            "seed": 0,
            "generation_config": "vllm",  # sampling comes from coevolve, never from the checkpoint
            # The engine shares the device with the policy: a bounded KV cache, not vLLM's 90% of a GPU.
            **(
                {"kv_cache_memory_bytes": 1 << 30, "enforce_eager": True} if on_cpu else {"gpu_memory_utilization": 0.4}
            ),
        }
        self.llm = vllm.LLM(
            model=self._dir.name,
            tokenizer=self._dir.name,
            dtype=str(adapter.model.dtype).removeprefix("torch."),
            max_model_len=spec.max_positions,
            enable_prompt_embeds=True,
            logprobs_mode="processed_logprobs",
            load_format="dummy",  # the weights come from the adapter, in memory (refresh)
            **{**defaults, **llm_kwargs},
        )
        self.refresh()

    def refresh(self, state: Mapping[str, torch.Tensor] | None = None) -> None:
        """Load the policy's trunk + LM head into the engine in place (default: the adapter's
        current weights; or `state`, a `language_model_state`), then drop its cached prefixes,
        whose keys and values the old weights computed."""
        state = language_model_state(self.adapter.model) if state is None else state
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": list(state.items()), "is_checkpoint_format": True}
        )
        self.llm.reset_prefix_cache()

    @torch.no_grad()
    def sample_text(
        self,
        prompts: list[Sequence],
        max_new_tokens: int,
        n: int = 1,
        sampling: Sampling = DEFAULT_SAMPLING,
        stop_ids: tuple[int, ...] = (),
        stop_strings: tuple[str, ...] = (),
        generator: torch.Generator | Generators | None = None,
    ) -> TextSample:
        """Draw `n` completions per (validated) prompt, as `sampler.sample_text` does; row r
        belongs to prompt r // n."""
        if n < 1:
            raise ValueError(f"n (completions per prompt) must be >= 1, got {n}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        adapter, spec = self.adapter, self.adapter.spec
        _check_room(prompts, spec, max_new_tokens, f"max_new_tokens={max_new_tokens}")
        packed = pack(list(prompts), spec, "left")
        embeds = embed(adapter.model, packed).cpu()  # (B, T, D); left padding: row i's context is its last columns
        lengths = packed.attention_mask.sum(-1).tolist()
        contexts = [{"prompt_embeds": embeds[i, embeds.shape[1] - length :]} for i, length in enumerate(lengths)]
        rows = len(prompts) * n
        params = [
            self._vllm.SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                max_tokens=max_new_tokens,
                stop=list(stop_strings),
                stop_token_ids=sorted({spec.eos_id, *stop_ids}),
                allowed_token_ids=self.allowed_ids,
                logprobs=0,  # the drawn token's log-prob only
                seed=seed,
            )
            for seed in _row_seeds(generator, rows)
        ]
        # One request per row (the prompt repeated n times): a row's draws depend on its seed alone;
        # vLLM's prefix cache shares the group's prefilled context.
        results = self.llm.generate([contexts[r // n] for r in range(rows)], params, use_tqdm=False)
        ids, logprobs, finish_reasons = [], [], []
        for r, result in enumerate(results):
            completion = result.outputs[0]
            if completion.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM text backend: row {r} ended with {completion.finish_reason!r}")
            drawn = list(completion.token_ids)
            ids.append(torch.tensor(drawn, dtype=torch.int64))
            logprobs.append(
                torch.tensor(
                    [step[token].logprob for step, token in zip(completion.logprobs, drawn)], dtype=torch.float32
                )
            )
            finish_reasons.append(completion.finish_reason)
        return TextSample(
            ids=ids,
            logprobs=logprobs,
            finish_reasons=finish_reasons,
            texts=adapter.tokenizer.batch_decode(ids, skip_special_tokens=True),
            n=n,
        )
