"""int8 against fp32 and fp32 ONNX against torch on real SciFact text (ir-measures NDCG@10)."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytestmark = pytest.mark.slow

QUERIES = 150  # SciFact test queries used, with every document they judge
CORPUS = 300  # documents in the subset: the judged ones plus random distractors


@pytest.fixture(scope="module")
def scifact(shared_data):
    """A SciFact slice: 150 test queries, all their relevant documents, and distractors up to 300."""
    from ddr_search.data.beir import load_beir

    corpus, queries, qrels = load_beir(shared_data / "beir" / "scifact", "test")
    qids = sorted(qrels)[:QUERIES]
    relevant = {d for q in qids for d in qrels[q] if d in corpus}
    others = sorted(set(corpus) - relevant)
    keep = relevant | set(random.Random(0).sample(others, CORPUS - len(relevant)))
    return (
        {d: corpus[d] for d in sorted(keep)},
        {q: queries[q] for q in qids},
        {q: qrels[q] for q in qids},
    )


def _ndcg(encoder, scifact) -> float:
    from ddr_search.evaluation.harness import dense_runs
    from ddr_search.evaluation.metrics import score_run

    corpus, queries, qrels = scifact
    runs, _, _ = dense_runs(corpus, queries, encoder, depth=100, show_progress=False)
    return score_run(qrels, runs, ("nDCG@10",))[0]["nDCG@10"]


def test_int8_passages_stay_close_to_fp32(ort_fp32, ort_int8, scifact):
    from ddr_search.evaluation.harness import passage_texts

    _, texts = passage_texts(scifact[0])
    texts = texts[:64]
    fp32 = ort_fp32.encode_passages(texts)
    int8 = ort_int8.encode_passages(texts)
    cosine = (fp32 * int8).sum(axis=1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(int8, axis=1)
    assert cosine.min() >= 0.98, f"min cosine {cosine.min():.4f}"


def test_ndcg_int8_within_001_of_fp32_and_fp32_equal_to_torch(torch_encoder, ort_fp32, ort_int8, scifact):
    torch_ndcg = _ndcg(torch_encoder, scifact)
    fp32_ndcg = _ndcg(ort_fp32, scifact)
    int8_ndcg = _ndcg(ort_int8, scifact)
    print(f"SciFact slice NDCG@10: torch {torch_ndcg:.4f}, ORT fp32 {fp32_ndcg:.4f}, ORT int8 {int8_ndcg:.4f}")
    assert torch_ndcg > 0.5  # a sane retriever (the frozen backbone scores ~0.65 on all of SciFact)
    assert abs(fp32_ndcg - torch_ndcg) <= 0.001
    assert abs(int8_ndcg - fp32_ndcg) <= 0.01
