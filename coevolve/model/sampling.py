"""The sampling distribution: temperature, top-k, top-p — one function for sampler and scorer.

`sampling_logprobs` is applied to the (guided) logits both when a token is drawn and when the
learner recomputes its log-prob, so the two agree by construction. With top-k/top-p the recorded
log-probs are those of the truncated distribution, which is what the token was drawn from.

Randomness (`choose`'s `generator`): one `torch.Generator` for the whole batch (`torch.multinomial`:
a row's draw depends on the rows around it), or one generator per row (`Generators`): each row
draws one uniform from its own generator per step and takes the token where the sampling
distribution's CDF passes it (inverse-CDF sampling). A row's tokens then depend only on its own
seed and logits, not on which batch, or which rollout worker, it was sampled in. `row_seed`
derives such seeds from named parts (run seed, step, prompt id, sample index, stage).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0 = greedy (argmax; log-probs under temperature 1)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


DEFAULT_SAMPLING = Sampling()
GREEDY = Sampling(temperature=0.0)


def sampling_logprobs(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """(M, V) logits -> (M, V) float32 log-probs of the distribution tokens are drawn from."""
    logits = logits.float()
    if not sampling.greedy and sampling.temperature != 1:
        logits = logits / sampling.temperature
    if sampling.top_k and sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative <= 1 - sampling.top_p
        drop[..., -1] = False  # keep at least the most likely token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def forbid(logits: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    """Give `ids` probability 0 (e.g. image-span tokens when sampling text)."""
    return logits.index_fill(-1, torch.tensor(ids, device=logits.device), float("-inf"))


def entropy(logprobs: torch.Tensor) -> torch.Tensor:
    """(M, V) log-probs -> (M,) entropy in nats; truncated-away tokens contribute 0."""
    probs = logprobs.exp()
    return -torch.where(probs > 0, probs * logprobs, torch.zeros_like(probs)).sum(-1)


Generators = Sequence[torch.Generator]
"""One CPU `torch.Generator` per row of a batch (see the module docstring)."""


def row_seed(*parts: object) -> int:
    """A 63-bit seed from named parts, e.g. `row_seed(run_seed, step, prompt_id, sample, "plan")`.

    A hash, not arithmetic on the parts, so that neighbouring prompts or steps get unrelated streams.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def row_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed."""
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def _inverse_cdf(probs: torch.Tensor, generators: Generators) -> torch.Tensor:
    """(M, V) probabilities -> (M,) ids, row r from one uniform of `generators[r]`."""
    if len(generators) != probs.shape[0]:
        raise ValueError(f"{len(generators)} row generators for {probs.shape[0]} rows")
    uniforms = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])  # (M,) in [0, 1)
    cdf = probs.double().cumsum(-1)  # (M, V)
    targets = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)  # (M, 1), below each row's total
    # The first id whose CDF exceeds the target: a zero-probability id never exceeds it first.
    ids = torch.searchsorted(cdf, targets, right=True).squeeze(-1)
    return ids.clamp_max(probs.shape[-1] - 1)


def choose(
    logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | Generators | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of (M, V) `logits` with `generator` (one for the batch, or one per row).

    Returns ((M,) ids, (M,) their log-probs under the sampling distribution)."""
    logprobs = sampling_logprobs(logits, sampling)
    if sampling.greedy:
        ids = torch.argmax(logits, dim=-1)  # on the logits themselves, as transformers does
    elif generator is None or isinstance(generator, torch.Generator):
        ids = torch.multinomial(logprobs.exp(), num_samples=1, generator=generator).squeeze(-1)
    else:
        ids = _inverse_cdf(logprobs.exp(), generator)
    return ids, logprobs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
