"""Dev-slice retrieval quality for early stopping: nDCG@10 by ir-measures over a score matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ndcg_at_10(scores: np.ndarray, positives: Sequence[Sequence[int]], depth: int = 100) -> float:
    """scores [Q, N] (query x candidate); positives: relevant candidate indices per query."""
    import ir_measures
    from ir_measures import nDCG

    depth = min(depth, scores.shape[1])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    qrels, run = [], []
    for q, (row, rel) in enumerate(zip(top, positives, strict=True)):
        qrels.extend(ir_measures.Qrel(str(q), str(d), 1) for d in set(rel))
        run.extend(ir_measures.ScoredDoc(str(q), str(int(d)), float(scores[q, d])) for d in row)
    if not qrels:
        return 0.0
    return float(ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10])
