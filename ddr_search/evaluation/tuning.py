"""Choosing a domain's hybrid fusion weights on its dev queries (issue 10: hybrid must never lose to
the better of its two retrievers). One grid, one rule, used when a module is trained and by the bench."""

from __future__ import annotations

from collections.abc import Mapping

from ddr_search.evaluation.harness import fuse_runs
from ddr_search.fusion import FusionConfig, Technique
from ddr_search.types import ScoredIds

DENSE_WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))  # 0.0 = BM25 alone ... 1.0 = dense alone
TECHNIQUES = tuple(Technique)  # every normalisation OpenSearch offers (z_score fuses on the client before 3.0)


def _config(technique: Technique, dense_weight: float) -> FusionConfig:
    return FusionConfig(technique, (round(1.0 - dense_weight, 2), dense_weight))


def grid_scores(
    bm25: Mapping[str, ScoredIds], dense: Mapping[str, ScoredIds], qrels: Mapping[str, Mapping[str, int]]
) -> dict[tuple[Technique, float], float]:
    """Mean nDCG@10 on `qrels` of every (technique, dense weight) in the grid."""
    from ddr_search.evaluation.metrics import score_run

    return {
        (t, w): score_run(qrels, fuse_runs([bm25, dense], _config(t, w)), ("nDCG@10",))[0]["nDCG@10"]
        for t in TECHNIQUES
        for w in DENSE_WEIGHTS
    }


def _preference(key: tuple[Technique, float]) -> tuple[int, float]:
    """Among equals: min_max first (every cluster fuses it natively), then the weight nearest 0.5."""
    return TECHNIQUES.index(key[0]), abs(key[1] - 0.5)


def choose_fusion(
    bm25: Mapping[str, ScoredIds], dense: Mapping[str, ScoredIds], qrels: Mapping[str, Mapping[str, int]]
) -> tuple[FusionConfig, dict[str, float]]:
    """The fusion with the best mean nDCG@10 on `qrels`, and the score of every grid point ("min_max@0.5").

    The grid includes each retriever alone, so on these queries the choice never loses to either."""
    scores = grid_scores(bm25, dense, qrels)
    best = max(sorted(scores, key=_preference), key=lambda k: scores[k])
    return _config(*best), {f"{t.value}@{w}": s for (t, w), s in scores.items()}


def choose_shared_fusion(
    collections: Mapping[str, tuple[Mapping[str, ScoredIds], Mapping[str, ScoredIds], Mapping[str, Mapping[str, int]]]],
) -> tuple[FusionConfig, dict[str, dict[str, float]]]:
    """One fusion for queries of no known domain (the general module's), over several collections
    (name -> (BM25 runs, dense runs, qrels)): the grid point whose worst margin over the better single
    retriever is largest, then the best mean nDCG@10. Returns it and every collection's scores."""
    per_set = {name: grid_scores(*runs) for name, runs in collections.items()}

    def key(point: tuple[Technique, float]) -> tuple[float, float]:
        alone = [max(s[(Technique.MIN_MAX, 0.0)], s[(Technique.MIN_MAX, 1.0)]) for s in per_set.values()]
        margins = [s[point] - best for s, best in zip(per_set.values(), alone, strict=True)]
        return min(margins), sum(s[point] for s in per_set.values()) / len(per_set)

    points = sorted(next(iter(per_set.values())), key=_preference)
    best = max(points, key=key)
    scores = {name: {f"{t.value}@{w}": v for (t, w), v in s.items()} for name, s in per_set.items()}
    return _config(*best), scores
