"""Which routing threshold a domain module earns, judged on dev queries (docs/routing.md).

A module that serves its own queries much better than the general module deserves a loose threshold; one
that gains little, or serves the queries of other sets badly when it accepts them, a strict one. Each
candidate quantile's threshold is weighed by what it would do to dev NDCG@10: the module's own held-out
queries, plus the mean change over other sets (the module alone against the general module: no other
domain's threshold enters, so the choice for one module does not move when others come and go). A
quantile replaces the default only when a bootstrap over the queries says it is better (Bonferroni over
the candidates: with eight of them one would otherwise pass by chance), so a flat, noisy curve keeps
the default. A quantile that costs any other set more than `max_loss` on average is never eligible: the mean
over the other sets would otherwise let a large loss on one of them hide behind the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ddr_search.routing import DEFAULT_QUANTILE

DRAW_CHUNK = 100  # bootstrap draws resampled at once
MAX_LOSS = 0.005  # the most a module may cost another dev set (NDCG@10): the zero-shot tolerance


@dataclass(frozen=True, slots=True)
class RoutingEvidence:
    """One set of dev queries seen from one module: each query's score against the module's profile
    (built without these queries) and its NDCG@10 through the module minus through the general module."""

    scores: NDArray[np.float32]
    gains: NDArray[np.float32]

    def changes(self, thresholds: Sequence[float]) -> NDArray[np.float64]:
        """[queries, thresholds]: each query's NDCG@10 change when the module takes what clears a threshold."""
        accepted = self.scores[:, None] >= np.asarray(thresholds, dtype=np.float32)[None, :]
        return np.where(accepted, self.gains[:, None].astype(np.float64), 0.0)


@dataclass(frozen=True, slots=True)
class QuantileChoice:
    """The chosen quantile and the evidence for it (recorded with the module by the release)."""

    quantile: float
    utilities: dict[float, float]  # quantile -> own mean change + mean over the other sets of theirs
    confidence: dict[float, float]  # quantile -> bootstrap share of draws where it beats the default
    required: float  # the share a quantile needed: `confidence` corrected for the number of candidates
    worst_other: dict[float, float]  # quantile -> the lowest mean change of any other set
    baseline: float  # what `confidence` compares against: the default, or the loosest quantile within the cap


def choose_quantile(
    thresholds: Mapping[float, float],
    own: RoutingEvidence,
    others: Sequence[RoutingEvidence],
    *,
    default: float = DEFAULT_QUANTILE,
    confidence: float = 0.95,
    draws: int = 2000,
    seed: int = 0,
    max_loss: float | None = MAX_LOSS,
) -> QuantileChoice:
    """The quantile (a key of `thresholds`, which must hold `default`) worth the most among those that
    beat `default` in bootstrap resamples of every set's queries with family-wise `confidence`; else
    `default`. Ties go to the smaller quantile (it routes more of the domain's queries). Only quantiles
    costing no other set more than `max_loss` are eligible; when `default` is not, the loosest eligible one
    stands in for it (the strictest candidate when none is)."""
    if default not in thresholds:
        raise ValueError(f"thresholds must include the default quantile {default}")
    quantiles = sorted(thresholds)
    worst = {q: worst_change(thresholds[q], others) for q in quantiles}
    safe = [q for q in quantiles if max_loss is None or worst[q] >= -max_loss]
    if default not in safe:
        default = safe[0] if safe else quantiles[-1]
    column = quantiles.index(default)
    rng = np.random.default_rng(seed)
    sets = [own, *others]
    weights = [1.0] + [1.0 / len(others)] * len(others) if others else [1.0]
    point = np.zeros(len(quantiles))
    drawn = np.zeros((draws, len(quantiles)))
    for evidence, weight in zip(sets, weights, strict=True):
        changes = evidence.changes([thresholds[q] for q in quantiles])
        if not len(changes):
            continue
        point += weight * changes.mean(axis=0)
        for start in range(0, draws, DRAW_CHUNK):  # [chunk, queries, quantiles] at a time: bounded memory
            rows = rng.integers(0, len(changes), size=(min(DRAW_CHUNK, draws - start), len(changes)))
            drawn[start : start + len(rows)] += weight * changes[rows].mean(axis=1)
    beats = (drawn > drawn[:, [column]]).mean(axis=0)
    utilities = {q: float(point[i]) for i, q in enumerate(quantiles)}
    shares = {q: float(beats[i]) for i, q in enumerate(quantiles)}
    required = 1.0 - (1.0 - confidence) / max(len(quantiles) - 1, 1)
    eligible = [q for q in safe if shares[q] >= required] + [default]
    chosen = min(eligible, key=lambda q: (-utilities[q], q))
    return QuantileChoice(chosen, utilities, shares, required, worst, default)


def worst_change(threshold: float, others: Sequence[RoutingEvidence]) -> float:
    """The lowest mean NDCG@10 change among the other sets when the module takes what clears `threshold`."""
    return min((float(e.changes([threshold]).mean()) for e in others if len(e.gains)), default=0.0)
