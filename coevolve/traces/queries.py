"""Filters over a trace store: DuckDB SQL conditions, and named ones built from the store's config.

A condition is a DuckDB SQL boolean expression over the trace columns (coevolve/traces/store.py);
quote names holding a slash: `"reward/format" < 0.5 AND step >= 10`. Named queries:

- `aha`: the first verdict said No, a regenerated image was drawn, and it scored higher than the
  first image — by the introspective program's image-scoring term on the final (or regenerated)
  image against its term on the first image (scorers `IMAGE_SCORERS`, told apart by their
  `segment` argument; a store without config falls back to the shapes recipe's names,
  `image_alignment` and `final_alignment`);
- `disagree`: the self-check disagreed with the judge — a `self_consistency` term's details
  (`judge` and `self` on opposite sides of 0.5), else the verdict's Yes/No against the first
  image's score (>= 0.5 counts as a match);
- `dropped`: trajectories whose group the reward step dropped (no rewards, not trained).

`below(store, "TERM=VALUE")` is the condition "reward term TERM below VALUE".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coevolve.traces.store import TraceStore

IMAGE_SCORERS = ("shapes_verifier", "yes_no_judge", "clip_score")
FINAL_SEGMENTS = ("final", "regen_image")
# The self-check's first answer token is drawn among " Yes" and " No": every verdict starts with one.
SAID_NO = r"""regexp_matches(verdict, '^\s*No\b')"""
SAID_YES = r"""regexp_matches(verdict, '^\s*Yes\b')"""


def quote(column: str) -> str:
    """`column` as a DuckDB identifier."""
    return '"' + column.replace('"', '""') + '"'


def _introspective_terms(store: TraceStore) -> list[tuple[str, dict]]:
    terms = []
    for program in (store.manifest.get("programs") or {}).values():
        if ((program or {}).get("rollout") or {}).get("program", "introspective_t2i") == "introspective_t2i":
            terms += list((((program or {}).get("reward") or {}).get("terms") or {}).items())
    return terms


def image_terms(store: TraceStore) -> tuple[str | None, str | None]:
    """(the term scoring the first image, the term scoring the final image) of the introspective program."""
    first = final = None
    for term, spec in _introspective_terms(store):
        scorer = (spec or {}).get("scorer") or {}
        if scorer.get("name") not in IMAGE_SCORERS:
            continue
        segment = scorer.get("segment", "image")
        if segment == "image" and first is None:
            first = term
        elif segment in FINAL_SEGMENTS and final is None:
            final = term
    terms = store.reward_terms
    if first is None and "image_alignment" in terms:
        first = "image_alignment"
    if final is None and "final_alignment" in terms:
        final = "final_alignment"
    return first, final


def _aha(store: TraceStore) -> str:
    first, final = image_terms(store)
    if first is None or final is None:
        raise ValueError(
            f"named query 'aha' needs reward terms scoring the first and the final image; {store.root} has "
            f"terms {store.reward_terms} (first: {first}, final: {final})"
        )
    return f"{SAID_NO} AND regen_image_path IS NOT NULL AND {quote('reward/' + final)} > {quote('reward/' + first)}"


def _disagree(store: TraceStore) -> str:
    names = [
        t
        for t, spec in _introspective_terms(store)
        if ((spec or {}).get("scorer") or {}).get("name") == "self_consistency"
    ]
    names = names or [t for t in store.reward_terms if t == "self_consistency"]
    for term in names:
        details = quote(f"reward/{term}/details")
        if details[1:-1] in store.columns:
            judge = f"TRY_CAST(json_extract_string({details}, '$.judge') AS DOUBLE)"
            own = f"TRY_CAST(json_extract_string({details}, '$.self') AS DOUBLE)"
            return f"{own} IS NOT NULL AND {judge} IS NOT NULL AND (({judge} >= 0.5) <> ({own} >= 0.5))"
    first, _ = image_terms(store)
    if first is None:
        raise ValueError(
            f"named query 'disagree' needs a self_consistency term or a term scoring the first image; "
            f"{store.root} has terms {store.reward_terms}"
        )
    score = quote(f"reward/{first}")
    return f"({SAID_YES} OR {SAID_NO}) AND {score} IS NOT NULL AND ({SAID_YES} <> ({score} >= 0.5))"


@dataclass(frozen=True)
class NamedQuery:
    description: str
    where: Callable[[TraceStore], str]  # the DuckDB condition for one store


named_queries: dict[str, NamedQuery] = {
    "aha": NamedQuery("first verdict No, then a regenerated image that scored higher than the first", _aha),
    "disagree": NamedQuery("the self-check's Yes/No disagreed with the judge", _disagree),
    "dropped": NamedQuery("the reward step dropped the trajectory's group", lambda store: "dropped"),
}


def below(store: TraceStore, spec: str) -> str:
    """The condition of "TERM=VALUE": reward term TERM's raw score below VALUE."""
    term, sep, value = spec.partition("=")
    if not sep:
        raise ValueError(f"--below {spec!r}: expected TERM=VALUE, e.g. format=0.5")
    if term not in store.reward_terms:
        raise ValueError(f"--below {spec!r}: no reward term {term!r} in {store.root} (terms: {store.reward_terms})")
    try:
        threshold = float(value)
    except ValueError:
        raise ValueError(f"--below {spec!r}: {value!r} is not a number") from None
    return f"{quote('reward/' + term)} < {threshold!r}"


def resolve_where(
    store: TraceStore, where: str | None, named: Sequence[str] = (), below_specs: Sequence[str] = ()
) -> str:
    """One condition: `where` AND every named query AND every "TERM=VALUE" of `below_specs` ('' for none)."""
    parts = [f"({where})"] if where and where.strip() else []
    for name in named:
        if name not in named_queries:
            raise ValueError(f"unknown named query {name!r}; known: {sorted(named_queries)}")
        parts.append(f"({named_queries[name].where(store)})")
    parts += [f"({below(store, spec)})" for spec in below_specs]
    return " AND ".join(parts)
