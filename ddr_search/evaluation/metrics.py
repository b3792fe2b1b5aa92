"""Score a run against qrels with ir-measures (never hand-rolled): NDCG@10, Recall@100, MRR@10."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ddr_search.types import ScoredIds

METRICS = ("nDCG@10", "R@100", "RR@10")  # ir-measures names; RR@10 is MRR@10


def to_trec_run(run: Mapping[str, ScoredIds]) -> dict[str, dict[str, float]]:
    """Ranked lists -> the {query: {doc: score}} dict ir-measures and pytrec_eval read.

    Scores become rank-derived (n, n-1, ..., 1): trec_eval re-sorts by score and breaks ties by doc
    id, so passing raw scores would measure a different order than the one returned wherever scores
    tie (common in fused lists). This way the measured ranking is exactly ours.
    """
    return {
        qid: {doc_id: float(len(hits) - rank) for rank, (doc_id, _) in enumerate(hits)} for qid, hits in run.items()
    }


def score_run(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, ScoredIds], metrics: Sequence[str] = METRICS
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean over every judged query, per-query values).

    A judged query with no hits in the run counts as 0, so an empty BM25 query cannot raise the mean
    (pytrec_eval alone would silently drop it).
    """
    import ir_measures

    measures = [ir_measures.parse_measure(name) for name in metrics]
    trec_run = {qid: docs for qid, docs in to_trec_run(run).items() if docs and qid in qrels}
    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(metrics, 0.0) for qid in qrels}
    for metric in ir_measures.iter_calc(measures, {q: dict(d) for q, d in qrels.items()}, trec_run):
        per_query[metric.query_id][str(metric.measure)] = float(metric.value)
    count = max(len(per_query), 1)
    aggregate = {name: sum(values[name] for values in per_query.values()) / count for name in metrics}
    return aggregate, per_query
