"""Hybrid score fusion with OpenSearch neural-search's formulas, shared by every backend and the harness.

One function, `fuse`, turns the ranked lists of several sub-queries (by convention sub-query 0 is
BM25 and 1 is dense) into one ranking, exactly as OpenSearch's `normalization-processor`
(min_max / l2 / z_score, then `arithmetic_mean` with weights) and `score-ranker-processor` (RRF) do.
The embedded backend, the client-side fallback over `_msearch` and the evaluation harness all call
this, so they rank identically to a cluster running the native `hybrid` query.

Normalisation is per sub-query, over the documents that sub-query returned (OpenSearch source,
`processor/normalization/*Technique.java`):

- min_max: ``(s - min) / (max - min)``; a result that normalises to exactly 0 (the list's minimum)
  becomes ``MIN_SCORE = 0.001`` so it still outranks documents the sub-query did not return; when
  ``min == max`` (a single hit, or all hits tied) every hit scores ``SINGLE_RESULT_SCORE = 1.0``.
- l2: ``s / sqrt(sum s_j^2)``; a zero norm gives 0.0.
- z_score: ``(s - mean) / std`` with the sample standard deviation (commons-math
  ``DescriptiveStatistics``, n - 1); results at or below the mean are clipped to 0.001; a score equal
  to the mean takes the list's maximum raw score and a zero deviation its minimum raw score (both
  as OpenSearch 3.x does; they only arise for one hit or all-tied hits).
- rrf: ``1 / (rank_constant + rank)``, rank counted from 1 in the order the list is given.

Combination (``ArithmeticMeanScoreCombinationTechnique``): a document **missing from a sub-query's
list scores 0.0 for that sub-query** (Java's zero-filled score array), and that 0.0 still counts:

    fused = sum_i(w_i * s_i for s_i >= 0) / sum_i(w_i for s_i >= 0)

A negative normalised score (only l2 on negative raw scores can produce one) is left out of both
sums. With weights summing to 1 and no negative scores this is simply ``sum_i w_i * s_i``, so a
document found by one sub-query alone keeps ``w_i * s_i``. RRF sums ``n * w_i / (rank_constant + rank_i)``
over the n lists the document appears in: the weights are scaled to a mean of 1, so equal weights give
the classic RRF sum ``sum_i 1 / (rank_constant + rank_i)``, which is what the 2.19 `score-ranker-processor`
returns (checked on a real node: a document first in both lists scores 2/61, not 1/61).

Weights are validated as OpenSearch validates them (each in [0, 1], summing to 1 within 0.01, one
per sub-query), so a configuration that runs here also runs as a search pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ddr_search.errors import ConfigError
from ddr_search.types import ScoredIds

MIN_SCORE = 0.001  # min_max / z_score floor for a returned document (OpenSearch MIN_SCORE)
SINGLE_RESULT_SCORE = 1.0  # min_max when min == max (OpenSearch SINGLE_RESULT_SCORE)
DEFAULT_RANK_CONSTANT = 60
GENERAL = "general"  # the key of the general module's fusion (ddr_search.model.ddr.GENERAL)
_WEIGHT_SUM_TOLERANCE = 0.01  # ScoreCombinationUtil.DELTA_FOR_SCORE_ASSERTION


class Technique(StrEnum):
    """Normalisation technique; the combination is the weighted arithmetic mean, or a sum for RRF."""

    MIN_MAX = "min_max"
    L2 = "l2"
    Z_SCORE = "z_score"
    RRF = "rrf"


@dataclass(frozen=True)
class FusionConfig:
    """How sub-query lists are fused. Defaults: min_max, BM25 0.5 / dense 0.5 (docs/architecture.md section 6)."""

    technique: Technique = Technique.MIN_MAX
    weights: tuple[float, ...] = (0.5, 0.5)
    rank_constant: int = DEFAULT_RANK_CONSTANT

    def __post_init__(self) -> None:
        object.__setattr__(self, "technique", Technique(self.technique))
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if not self.weights:
            raise ConfigError("fusion weights: give one weight per sub-query")
        if any(not 0.0 <= w <= 1.0 or math.isnan(w) for w in self.weights):
            raise ConfigError(f"fusion weights must each be in [0, 1], got {list(self.weights)}")
        if abs(sum(self.weights) - 1.0) > _WEIGHT_SUM_TOLERANCE:
            raise ConfigError(f"fusion weights must sum to 1.0 (as OpenSearch requires), got {list(self.weights)}")
        if not 1 <= self.rank_constant <= 10_000:
            raise ConfigError(f"rrf rank_constant must be in [1, 10000], got {self.rank_constant}")

    def to_record(self) -> dict[str, str | int | float]:
        """The flat form a module store's manifest keeps (weights as "bm25,dense")."""
        return {
            "technique": self.technique.value,
            "weights": ",".join(f"{w:g}" for w in self.weights),
            "rank_constant": self.rank_constant,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, str | int | float]) -> FusionConfig:
        weights = tuple(float(w) for w in str(record["weights"]).split(","))
        return cls(
            Technique(str(record["technique"])), weights, int(record.get("rank_constant", DEFAULT_RANK_CONSTANT))
        )


@dataclass(frozen=True)
class Fused:
    """One fused result: its fused score and each sub-query's raw score (None where it was absent)."""

    id: str
    score: float
    sub_scores: tuple[float | None, ...]


def _dedupe(results: ScoredIds) -> ScoredIds:
    """A document listed twice in one sub-query keeps its first (best-ranked) entry."""
    seen: set[str] = set()
    out: ScoredIds = []
    for doc_id, score in results:
        if doc_id not in seen:
            seen.add(doc_id)
            out.append((doc_id, float(score)))
    return out


def _min_max(scores: list[float]) -> list[float]:
    low, high = min(scores), max(scores)
    out = []
    for s in scores:
        if high == low:
            out.append(SINGLE_RESULT_SCORE)
            continue
        n = (s - low) / (high - low)
        out.append(MIN_SCORE if n == 0.0 else n)
    return out


def _l2(scores: list[float]) -> list[float]:
    norm = math.sqrt(sum(s * s for s in scores))
    return [0.0 if norm == 0 else s / norm for s in scores]


def _z_score(scores: list[float]) -> list[float]:
    n = len(scores)
    mean = sum(scores) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else 0.0
    low, high = min(scores), max(scores)
    out = []
    for s in scores:
        if s == mean:
            out.append(high)
        elif std == 0.0:
            out.append(low)
        else:
            z = (s - mean) / std
            out.append(MIN_SCORE if z <= 0.0 else z)
    return out


def _rrf(scores: list[float], rank_constant: int) -> list[float]:
    return [1.0 / (rank_constant + rank) for rank in range(1, len(scores) + 1)]


def normalize(results: ScoredIds, technique: Technique, rank_constant: int = DEFAULT_RANK_CONSTANT) -> ScoredIds:
    """One sub-query's list with normalised scores, in the given order (see the module docstring)."""
    results = _dedupe(results)
    if not results:
        return []
    raw = [s for _, s in results]
    if technique is Technique.MIN_MAX:
        normalised = _min_max(raw)
    elif technique is Technique.L2:
        normalised = _l2(raw)
    elif technique is Technique.Z_SCORE:
        normalised = _z_score(raw)
    else:
        normalised = _rrf(raw, rank_constant)
    return [(doc_id, n) for (doc_id, _), n in zip(results, normalised, strict=True)]


def _combine(scores: Sequence[float], weights: Sequence[float], technique: Technique) -> float:
    total = 0.0
    weight_sum = 0.0
    for s, w in zip(scores, weights, strict=True):
        if s >= 0.0:
            total += w * s
            weight_sum += w
    if weight_sum == 0.0:
        return 0.0
    return total * len(weights) if technique is Technique.RRF else total / weight_sum


def routed_fusion(routing: Mapping[str, float], configs: Mapping[str, FusionConfig]) -> FusionConfig | None:
    """The fusion chosen for the module that carries most of a query's routing weight (each domain's is
    tuned on its dev queries when it is trained), or the general module's when no domain module routes."""
    if routing:
        module = max(sorted(routing), key=lambda name: routing[name])
        if module in configs:
            return configs[module]
    return configs.get(GENERAL)


def fuse(sub_results: Sequence[ScoredIds], config: FusionConfig, k: int | None = None) -> list[Fused]:
    """Fuse sub-query result lists into one ranking: fused score descending, ties by id ascending.

    Each list is a sub-query's hits best first (for RRF the order is the rank). A document absent
    from a list scores 0.0 there (see the module docstring). `k` keeps the best k; None keeps all.
    Raises ConfigError when the number of weights differs from the number of lists.
    """
    if len(sub_results) != len(config.weights):
        raise ConfigError(
            f"{len(config.weights)} fusion weights for {len(sub_results)} sub-queries: give one weight per sub-query"
        )
    n = len(sub_results)
    raw: dict[str, list[float | None]] = {}
    normalised: dict[str, list[float]] = {}
    for i, results in enumerate(sub_results):
        deduped = _dedupe(results)
        for (doc_id, score), (_, norm) in zip(
            deduped, normalize(deduped, config.technique, config.rank_constant), strict=True
        ):
            if doc_id not in raw:
                raw[doc_id] = [None] * n
                normalised[doc_id] = [0.0] * n
            raw[doc_id][i] = score
            normalised[doc_id][i] = norm
    fused = [
        Fused(doc_id, _combine(normalised[doc_id], config.weights, config.technique), tuple(raw[doc_id]))
        for doc_id in raw
    ]
    fused.sort(key=lambda f: (-f.score, f.id))
    return fused if k is None else fused[:k]
