"""BEIR qrels -> pairs, self-supervised pairs from a raw corpus, and hard-negative mining."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ddr_search.data.beir import read_qrels
from ddr_search.errors import InputError
from ddr_search.training.beir_pairs import pairs_from_beir
from ddr_search.training.corpus import read_corpus
from ddr_search.training.mining import mine_bm25, mine_dense
from ddr_search.training.pairs import Pair, Passage
from ddr_search.training.selfsup import (
    LabelFreeBudget,
    PseudoQuery,
    documents_within,
    label_free_pairs,
    pairs_from_corpus,
    sentences,
)
from ddr_search.types import Document


def test_scifact_train_qrels_become_pairs(shared_data):
    folder = shared_data / "beir" / "scifact"
    pairs = pairs_from_beir(folder, "train", domain="scifact")
    qrels = read_qrels(folder / "qrels" / "train.tsv")
    assert len(pairs) == len(qrels) == 809
    assert sum(len(p.positives) for p in pairs) == 919
    corpus_ids = {d.id for d in read_corpus(folder / "corpus.jsonl")}
    for pair in pairs:
        assert pair.domain == "scifact"
        assert {p.id for p in pair.positives} == set(qrels[pair.query_id])
        assert all(p.id in corpus_ids and p.text for p in pair.positives)


def test_test_split_is_refused(shared_data):
    with pytest.raises(InputError, match="test split"):
        pairs_from_beir(shared_data / "beir" / "scifact", "test")


def test_bad_qrels_line_is_named(tmp_path):
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(InputError) as info:
        read_qrels(tmp_path / "qrels.tsv")
    assert info.value.line == 2


DOCS = [
    Document(
        "d1",
        title="Vitamin D and fractures in older adults",
        text="Vitamin D is thought to protect bones. We randomised 2,000 adults over seventy years of age. "
        "Supplementation did not reduce the risk of hip fractures over five years. Falls were also unchanged.",
    ),
    Document(
        "d2",
        title="Alveolar macrophages",
        text="Alveolar macrophages clear inhaled particles from the lung. They also present antigens to T cells. "
        "Their depletion increases the severity of pneumonia in mice.",
    ),
    Document("d3", title="", text="Too short."),
]


def test_self_supervised_pairs_point_at_their_document():
    pairs = pairs_from_corpus(DOCS, domain="med", seed=1)
    kinds = {p.query_id.split(":")[1] for p in pairs}
    assert kinds == {k.value for k in PseudoQuery}
    for pair in pairs:
        (positive,) = pair.positives
        doc = next(d for d in DOCS if d.id == positive.id)
        assert pair.domain == "med" and pair.query.strip()
        if pair.query_id.endswith(":sentence"):
            assert pair.query in sentences(doc.text) and pair.query not in positive.text
        if pair.query_id.endswith(":crop"):
            assert pair.query in doc.text
        if pair.query_id.endswith(":title"):
            assert pair.query == doc.title
    assert not any(p.positives[0].id == "d3" for p in pairs)
    assert pairs_from_corpus(DOCS, seed=1) == [Pair(p.query, p.positives, (), None, p.query_id) for p in pairs]


def test_label_free_pairs_hold_out_whole_documents_and_keep_to_the_budget(shared_data):
    docs = read_corpus(shared_data / "beir" / "scifact" / "corpus.jsonl")[:300]
    every = pairs_from_corpus(docs, domain="sci", seed=0)
    budget = LabelFreeBudget(examples=200, dev_pairs=40)
    train, dev = label_free_pairs(docs, "sci", budget, dev_fraction=0.1, seed=0)
    assert len(train) == 200 and 40 <= len(dev) < 40 + len(PseudoQuery)  # whole documents, first past 40
    assert not {p.positives[0].id for p in train} & {p.positives[0].id for p in dev}
    assert {p.query_id for p in (*train, *dev)} <= {p.query_id for p in every}
    assert (train, dev) == label_free_pairs(docs, "sci", budget, dev_fraction=0.1, seed=0)
    small_train, small_dev = label_free_pairs(docs[:20], "sci", budget, dev_fraction=0.1, seed=0)
    total = len(pairs_from_corpus(docs[:20], domain="sci", seed=0))
    assert small_train and 0 < len(small_dev) <= round(total * 0.1) + len(PseudoQuery) - 1
    assert budget.steps(32) == 7


def test_a_time_budget_keeps_every_document_that_fits_and_a_seeded_sample_otherwise():
    docs = [Document(f"d{i}", title="", text=f"passage number {i}") for i in range(1000)]
    assert documents_within(docs, lambda texts: None, 60.0) == docs

    def slow(texts):  # 1 ms a document: about 500 fit in half a second
        time.sleep(0.001 * len(texts))

    sample = documents_within(docs, slow, 0.5, probe=50, granularity=100)
    assert 100 <= len(sample) <= 500 and len(sample) % 100 == 0
    assert len({d.id for d in sample}) == len(sample) and sample != docs[: len(sample)]  # shuffled, no repeats
    smaller = documents_within(docs, slow, 0.25, probe=50, granularity=100)
    assert smaller == sample[: len(smaller)]  # the same seeded order, cut shorter


def test_bm25_mining_never_returns_a_positive(shared_data):
    folder = shared_data / "beir" / "scifact"
    docs = read_corpus(folder / "corpus.jsonl")
    pairs = pairs_from_beir(folder, "train")[:40]
    mined = mine_bm25(pairs, docs, count=5)
    hits = 0
    for before, after in zip(pairs, mined, strict=True):
        positives = {p.id for p in before.positives}
        negatives = [n.id for n in after.negatives]
        assert len(negatives) == 5 and len(set(negatives)) == 5
        assert positives.isdisjoint(negatives)
        hits += 1
    assert hits == 40


def test_dense_mining_skips_positives_even_when_they_rank_first():
    docs = [Document(f"d{i}", title="", text=f"text {i}") for i in range(6)]
    pairs = [Pair("q", (Passage("text 0", "d0"), Passage("text 3", "d3")))]
    doc_vectors = np.eye(6, dtype=np.float32)
    query = np.array([[1.0, 0.5, 0.4, 0.9, 0.3, 0.2]], dtype=np.float32)  # positives d0, d3 rank 1 and 2
    (mined,) = mine_dense(pairs, docs, query, doc_vectors, count=3)
    assert [n.id for n in mined.negatives] == ["d1", "d2", "d4"]
