"""BEIR folder reader: real data loads; each malformed file names its file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddr_search.data.beir import load_beir, read_corpus, read_qrels, read_queries
from ddr_search.errors import InputError

CORPUS = [
    {"_id": "d1", "title": "Vitamin D", "text": "Vitamin D did not reduce fractures."},
    {"_id": "d2", "title": "", "text": "Self-attention relates every token to every other."},
    {"_id": "d3", "text": "No title at all."},
]
QUERIES = [{"_id": "q1", "text": "vitamin d fractures"}, {"_id": "q2", "text": "attention"}, {"_id": "q3", "text": "x"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n"


def write(
    folder: Path, corpus: str | bytes | None = None, queries: str | None = None, qrels: str | None = None
) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else "".join(json.dumps(d) + "\n" for d in CORPUS)
    if isinstance(corpus, bytes):
        (folder / "corpus.jsonl").write_bytes(corpus)
    else:
        (folder / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        queries if queries is not None else "".join(json.dumps(q) + "\n" for q in QUERIES), encoding="utf-8"
    )
    (folder / "qrels" / "test.tsv").write_text(qrels if qrels is not None else QRELS, encoding="utf-8")
    return folder


def test_well_formed_folder(tmp_path: Path) -> None:
    corpus, queries, qrels = load_beir(write(tmp_path))
    assert corpus["d3"] == {"title": "", "text": "No title at all."}
    assert queries == {"q1": "vitamin d fractures", "q2": "attention"}  # only judged queries
    assert qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}


def test_real_scifact_loads(shared_data: Path) -> None:
    corpus, queries, qrels = load_beir(shared_data / "beir" / "scifact", "test")
    assert (len(corpus), len(queries), sum(len(v) for v in qrels.values())) == (5183, 300, 339)


def good_lines(rows: list[dict]) -> list[str]:
    return [json.dumps(r) for r in rows]


@pytest.mark.parametrize(
    ("file", "content", "line", "field", "message"),
    [
        ("corpus.jsonl", [*good_lines(CORPUS[:1]), '{"_id": "d2", "title": "x"'], 2, None, "invalid JSON"),
        ("corpus.jsonl", [*good_lines(CORPUS[:2]), '{"title": "x", "text": "y"}'], 3, "_id", "missing"),
        ("corpus.jsonl", [*good_lines(CORPUS[:1]), '{"_id": "d9", "title": "x"}'], 2, "text", "missing"),
        ("corpus.jsonl", [*good_lines(CORPUS[:1]), '{"_id": "d9", "text": 5}'], 2, "text", "string"),
        ("corpus.jsonl", [*good_lines(CORPUS[:1]), '{"_id": "d1", "text": "again"}'], 2, "_id", "twice"),
        ("corpus.jsonl", [*good_lines(CORPUS[:1]), '["not", "an", "object"]'], 2, None, "JSON object"),
        ("queries.jsonl", [*good_lines(QUERIES[:2]), '{"_id": "q3"}'], 3, "text", "missing"),
        ("queries.jsonl", ['{"_id": null, "text": "x"}'], 1, "_id", "non-empty string"),
        ("qrels/test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td2"], 3, None, "3 tab-separated"),
        ("qrels/test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\thigh"], 2, "score", "integer"),
        ("qrels/test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q9\td1\t1"], 3, "query-id", "not in queries"),
    ],
)
def test_malformed_files_name_file_line_and_field(
    tmp_path: Path, file: str, content: list[str], line: int, field: str | None, message: str
) -> None:
    folder = write(tmp_path)
    (folder / file).write_text("\n".join(content) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message) as caught:
        load_beir(folder)
    error = caught.value
    assert error.path == str(folder / file) and error.line == line and error.field == field
    assert f"{folder / file}:{line}: " in str(error)
    if field:
        assert repr(field) in str(error)


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    lines = [json.dumps(CORPUS[0]).encode(), b'{"_id": "d2", "text": "caf\xe9"}']
    folder = write(tmp_path, corpus=b"\n".join(lines) + b"\n")
    with pytest.raises(InputError, match=r"corpus\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        read_corpus(folder / "corpus.jsonl")


def test_missing_files_and_splits(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        load_beir(tmp_path / "nowhere")
    folder = write(tmp_path)
    with pytest.raises(InputError, match=r"no qrels for split 'dev' \(splits here: test\)"):
        load_beir(folder, "dev")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(InputError, match=r"queries\.jsonl: cannot read"):
        load_beir(folder)
    with pytest.raises(InputError, match="no judgements"):
        read_qrels(write(tmp_path, qrels="query-id\tcorpus-id\tscore\n") / "qrels" / "test.tsv")


def test_headerless_qrels_and_blank_lines(tmp_path: Path) -> None:
    folder = write(tmp_path, qrels="q1\td1\t1\n\nq2\td2\t0\n")
    assert read_qrels(folder / "qrels" / "test.tsv") == {"q1": {"d1": 1}, "q2": {"d2": 0}}
    assert read_queries(folder / "queries.jsonl")["q3"] == "x"


def test_judgements_on_absent_documents_are_kept_with_one_warning(tmp_path: Path, caplog) -> None:
    """Official BEIR files (ArguAna) judge documents missing from their corpus: evaluators count them as
    relevant and unretrievable, so must we (a strict error made the release unusable)."""
    import ir_measures

    from ddr_search.evaluation.metrics import score_run, to_trec_run

    folder = write(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td7\t1\nq2\td2\t2\nq2\td8\t1\n")
    with caplog.at_level("WARNING"):
        _, _, qrels = load_beir(folder)
    assert qrels == {"q1": {"d1": 1, "d7": 1}, "q2": {"d2": 2, "d8": 1}}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "2 judgement(s) name documents absent from corpus.jsonl" in warnings[0]
    run = {"q1": [("d1", 2.0), ("d3", 1.0)], "q2": [("d2", 1.0)]}
    ours, _ = score_run(qrels, run)
    reference = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, to_trec_run(run))
    assert ours["nDCG@10"] == pytest.approx(reference[ir_measures.nDCG @ 10])
    assert ours["nDCG@10"] < 1.0  # the absent documents count against every run
