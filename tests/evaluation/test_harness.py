"""The evaluation harness end to end on a small real slice of SciFact (and the eval CLI through CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ddr_search.data.beir import load_beir
from ddr_search.errors import InputError
from ddr_search.evaluation import evaluate
from ddr_search.evaluation.harness import bm25_runs, fuse_runs, load_encoder
from ddr_search.fusion import FusionConfig, Technique

N_QUERIES, N_FILLER = 8, 30


def write_beir(folder: Path, corpus: dict, queries: dict, qrels: dict) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc_id, doc in corpus.items():
            f.write(json.dumps({"_id": doc_id, **doc}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, docs in qrels.items() for d, s in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def scifact_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 real test queries, their cited abstracts and 30 other abstracts (~40 documents)."""
    corpus, queries, qrels = load_beir(shared_data / "beir" / "scifact", "test")
    qids = list(qrels)[:N_QUERIES]
    keep = {d for q in qids for d in qrels[q]} | set(list(corpus)[:N_FILLER])
    folder = tmp_path_factory.mktemp("scifact-slice")
    return write_beir(folder, {d: corpus[d] for d in corpus if d in keep}, {q: queries[q] for q in qids},
                      {q: qrels[q] for q in qids})  # fmt: skip


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def frozen():
    return load_encoder(None, None)


@pytest.mark.slow
def test_bm25_dense_hybrid_and_the_cache(scifact_slice: Path, cache_dir: Path, frozen) -> None:
    bm25 = evaluate(scifact_slice, "bm25", show_progress=False)
    dense = evaluate(scifact_slice, "dense", encoder=frozen, cache_dir=cache_dir, show_progress=False)
    assert dense.timings["dense_passages_cached"] == 0.0 and len(list(cache_dir.glob("passages-*.npy"))) == 1
    meta = json.loads(next(cache_dir.glob("passages-*.json")).read_text())
    assert meta["encoder_version"] == frozen.version and meta["max_passage_length"] == 256
    again = evaluate(scifact_slice, "dense", encoder=frozen, cache_dir=cache_dir, show_progress=False)
    assert again.timings["dense_passages_cached"] == 1.0 and again.timings["dense_encode_passages_s"] == 0.0
    assert again.metrics == dense.metrics and again.run == dense.run

    # a small corpus holding every cited abstract: both methods must find most of them
    for result in (bm25, dense):
        assert result.num_queries == N_QUERIES and result.num_documents < N_QUERIES * 3 + N_FILLER
        assert set(result.per_query) == set(result.run) | set(result.per_query)
        assert 0.5 < result.metrics["nDCG@10"] <= 1.0 and result.metrics["R@100"] > 0.8
        assert all(len(hits) <= 100 for hits in result.run.values())

    hybrid = evaluate(scifact_slice, "hybrid", encoder=frozen, cache_dir=cache_dir, show_progress=False,
                      fusion=FusionConfig(Technique.RRF))  # fmt: skip
    assert hybrid.timings["dense_passages_cached"] == 1.0
    assert hybrid.run == fuse_runs([bm25.run, dense.run], FusionConfig(Technique.RRF))
    assert hybrid.config["fusion"] == {"technique": "rrf", "weights": [0.5, 0.5], "rank_constant": 60}
    report = hybrid.to_dict()
    assert "run" not in report and set(report["metrics"]) == {"nDCG@10", "R@100", "RR@10"}


def test_exclude_self_hits(tmp_path: Path) -> None:
    # ArguAna-style: the query is itself a corpus document with the same id
    corpus = {
        "q1": {"title": "", "text": "vitamin d supplements reduce fractures in older adults"},
        "d2": {"title": "Vitamin D", "text": "supplements of vitamin d and fractures in adults"},
        "d3": {"title": "", "text": "transformers and attention"},
    }
    folder = write_beir(tmp_path, corpus, {"q1": corpus["q1"]["text"]}, {"q1": {"d2": 1}})
    kept = evaluate(folder, "bm25", show_progress=False)
    dropped = evaluate(folder, "bm25", exclude_self_hits=True, show_progress=False)
    assert kept.run["q1"][0][0] == "q1"
    assert [d for d, _ in dropped.run["q1"]] == ["d2"] and dropped.metrics["nDCG@10"] == 1.0


def test_inconsistent_options_are_refused(scifact_slice: Path) -> None:
    with pytest.raises(InputError, match="ddr needs a module store"):
        evaluate(scifact_slice, "ddr", show_progress=False)
    with pytest.raises(InputError, match="frozen backbone"):
        evaluate(scifact_slice, "dense", domain="scifact", show_progress=False)
    with pytest.raises(InputError, match="need modules"):
        evaluate(scifact_slice, "hybrid", routing="soft", show_progress=False)
    with pytest.raises(ValueError):
        evaluate(scifact_slice, "splade", show_progress=False)


def test_bm25_and_the_encoder_see_the_same_passage_text(tmp_path) -> None:
    """What the embedded store gives BM25 for each document is exactly what the encoder embeds."""
    import numpy as np

    from connectors.embedded import EmbeddedBackend
    from ddr_search.evaluation.harness import passage_texts
    from ddr_search.types import Document, IndexedDocument, passage_text

    docs = [Document("a", "Body text.", "A Title"), Document("b", "Only a body.", ""), Document("c", "x", "  ")]
    backend = EmbeddedBackend(tmp_path / "store", 4)
    backend.upsert([IndexedDocument(d, np.ones(4, dtype=np.float32) / 2, "v") for d in docs])
    indexed = backend.store.rows().texts
    backend.close()
    assert indexed == [passage_text(d.title, d.text) for d in docs]
    corpus = {d.id: {"title": d.title, "text": d.text} for d in docs}
    assert passage_texts(corpus)[1] == indexed  # the evaluation harness feeds the encoder the same strings


@pytest.mark.slow
def test_full_scifact_bm25_reproduces_the_reference(shared_data: Path) -> None:
    """docs/architecture.md section 6: bm25s on SciFact test, NDCG@10 0.686 (the published bm25s number)."""
    result = evaluate(shared_data / "beir" / "scifact", "bm25", show_progress=False)
    assert result.metrics["nDCG@10"] == pytest.approx(0.686, abs=0.005)
    assert result.num_queries == 300


# ---- the CLI -------------------------------------------------------------------------------------
@pytest.fixture()
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("DDR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DDR_MODULES", raising=False)
    monkeypatch.delenv("DDR_BACKBONE", raising=False)
    return CliRunner()


def test_cli_bm25_table_and_report(runner: CliRunner, scifact_slice: Path, tmp_path: Path) -> None:
    from ddr_search.cli.main import cli

    out = tmp_path / "report.json"
    result = runner.invoke(cli, ["eval", "--beir", str(scifact_slice), "--method", "bm25", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "nDCG@10" in result.output and f"report: {out}" in result.output
    report = json.loads(out.read_text())
    assert report["method"] == "bm25" and report["num_queries"] == N_QUERIES
    direct, _ = bm25_runs(*load_beir(scifact_slice)[:2])
    assert 0.0 < report["metrics"]["nDCG@10"] <= 1.0 and len(report["per_query"]) == len(direct)


def test_cli_errors_are_one_line(runner: CliRunner, scifact_slice: Path, tmp_path: Path) -> None:
    from ddr_search.cli.main import cli

    result = runner.invoke(cli, ["eval", "--beir", str(scifact_slice), "--method", "ddr"])
    assert result.exit_code == 1 and "error: ddr needs a module store" in result.output
    result = runner.invoke(cli, ["eval", "--beir", str(tmp_path / "none"), "--method", "bm25"])
    assert result.exit_code == 1 and "not a folder" in result.output
    result = runner.invoke(cli, ["eval", "--beir", str(scifact_slice), "--weights", "0.2"])
    assert result.exit_code == 2 and "two weights" in result.output


@pytest.mark.slow
def test_cli_ddr_with_an_untrained_module_equals_dense(
    runner: CliRunner, scifact_slice: Path, cache_dir: Path, tmp_path: Path, frozen
) -> None:
    """A new domain module is an exact no-op, so ddr (prior routing) must score exactly as dense."""
    from ddr_search.cli.main import cli
    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.store import save_store

    model = DDRModel(load_backbone(), prefix_length=8)
    model.add_domain_module("scifact")
    save_store(model, tmp_path / "store")
    dense = evaluate(scifact_slice, "dense", encoder=frozen, cache_dir=cache_dir, show_progress=False)
    out = tmp_path / "ddr.json"
    args = ["eval", "--beir", str(scifact_slice), "--method", "ddr", "--modules", str(tmp_path / "store"),
            "--domain", "scifact", "--cache-dir", str(cache_dir), "--quiet", "--out", str(out)]  # fmt: skip
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["routing"] == {"scifact": 1.0} and "mean routing weights: scifact=1.00" in result.output
    assert report["timings"]["dense_passages_cached"] == 1.0  # passages depend on backbone + general only
    assert report["metrics"] == pytest.approx(dense.metrics, abs=1e-9)
    bad = runner.invoke(cli, [*args[:-2], "--domain", "legal"])
    assert bad.exit_code == 1 and "no module is mapped to domain 'legal'" in bad.output
