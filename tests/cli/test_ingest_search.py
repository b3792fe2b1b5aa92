"""`ddr-search ingest / search / delete / stats` end to end: bad input, real encoder, SIGKILL mid-ingest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.embedded import EmbeddedBackend
from ddr_search.cli.main import cli
from ddr_search.client import DDRSearch
from ddr_search.settings import Settings
from tests.doubles import HashingEncoder

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "ddr_search" / "demo"
GOOD = [{"id": f"g{i}", "title": f"Good {i}", "text": f"a valid document about contracts number {i}"} for i in range(3)]


def run(home: Path, *args: str):
    return CliRunner().invoke(cli, list(args), env={"DDR_HOME": str(home)}, catch_exceptions=False)


def state(home: Path) -> tuple[int, int, list[str]]:
    backend = EmbeddedBackend(Settings(home=home).embedded_dir)
    try:
        return backend.count(), backend.store.generation(), sorted(backend.get([f"g{i}" for i in range(9)]))
    finally:
        backend.close()


@pytest.fixture()
def seeded(tmp_path) -> Path:
    """A store holding three documents (written through the real client with the encoder test double)."""
    home = tmp_path / "home"
    with DDRSearch(Settings(home=home), encoder=HashingEncoder()) as client:
        client.ingest(GOOD)
    return home


def lines(*items: str | bytes) -> bytes:
    return b"".join((i if isinstance(i, bytes) else i.encode()) + b"\n" for i in items)


GOOD_LINE = json.dumps({"id": "new", "text": "fine"})
BAD_INPUTS = {
    "invalid-json": (lines(GOOD_LINE, '{"id": "x", "text": "unterminated}'), 2, "invalid JSON"),
    "missing-id": (lines(GOOD_LINE, GOOD_LINE.replace("new", "n2"), '{"text": "no id"}'), 3, "field 'id'"),
    "missing-text": (lines('{"id": "x", "title": "only a title"}'), 1, "field 'text'"),
    "non-utf8": (lines(GOOD_LINE, b'{"id": "x", "text": "caf\xe9"}'), 2, "not valid UTF-8"),
    "duplicate-id": (
        lines(GOOD_LINE, '{"id": "y", "text": "b"}', GOOD_LINE),
        3,
        "duplicate id 'new' (first on line 1)",
    ),
    "metadata-not-object": (lines('{"id": "x", "text": "t", "metadata": [1]}'), 1, "field 'metadata'"),
    "metadata-empty-list": (lines('{"id": "x", "text": "t", "metadata": []}'), 1, "field 'metadata'"),
    "metadata-zero": (lines('{"id": "x", "text": "t", "metadata": 0}'), 1, "field 'metadata'"),
    "lone-surrogate": (lines(GOOD_LINE, '{"id": "x", "text": "x \\udc80 y"}'), 2, "not valid Unicode"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_and_line_exits_non_zero_and_leaves_the_store_unchanged(seeded, tmp_path, case):
    content, line, message = BAD_INPUTS[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(content)
    before = state(seeded)
    result = run(seeded, "ingest", "--domain", "legal", str(path))
    assert result.exit_code == 1
    assert f"{path}:{line}: " in result.stderr
    assert message in result.stderr
    assert state(seeded) == before


def test_empty_file_is_an_error(seeded, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n")
    before = state(seeded)
    result = run(seeded, "ingest", str(path))
    assert result.exit_code == 1
    assert f"{path}: no documents" in result.stderr
    assert state(seeded) == before


def test_missing_file_and_bad_domain_are_errors(seeded, tmp_path):
    assert "no such file" in run(seeded, "ingest", str(tmp_path / "nope.jsonl")).stderr
    path = tmp_path / "ok.jsonl"
    path.write_bytes(lines(GOOD_LINE))
    result = run(seeded, "ingest", "--domain", "Not A Slug", str(path))
    assert result.exit_code == 1 and "is not a slug" in result.stderr


def test_unknown_domain_search_is_a_clear_error(seeded):
    result = run(seeded, "search", "contracts", "--domain", "astrology", "--mode", "bm25")
    assert result.exit_code == 1
    assert "unknown domain 'astrology'" in result.stderr


def test_the_ingest_summary_says_one_document_in_the_singular():
    from ddr_search.ingest import IngestReport

    assert IngestReport("a.jsonl", "legal", 1, written=1).summary().startswith("indexed 1 document from a.jsonl")
    assert IngestReport("a.jsonl", None, 2, unchanged=2).summary().startswith("indexed 2 documents from a.jsonl")


# -- with the real encoder ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    """The shipped legal demo corpus ingested by the real command and the real encoder."""
    home = tmp_path_factory.mktemp("demo") / "home"
    result = run(home, "ingest", "--domain", "legal", str(DEMO / "legal.jsonl"))
    assert result.exit_code == 0, result.output
    assert "indexed 50 documents" in result.stdout
    return home


@pytest.mark.slow
def test_skip_invalid_reports_every_skipped_line_and_ingests_the_rest(demo_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    path = tmp_path / "mixed.jsonl"
    good = [json.dumps({"id": f"m{i}", "text": f"mixed valid document {i}"}) for i in range(3)]
    path.write_bytes(lines(good[0], "{oops", good[1], '{"id": "m9"}', good[2], good[0].encode()))
    result = run(home, "ingest", "--domain", "legal", "--skip-invalid", str(path))
    assert result.exit_code == 0, result.output
    for line in (2, 4, 6):
        assert f"skipped {path}:{line}: " in result.stderr
    assert "indexed 3 documents" in result.stdout and "skipped 3 invalid lines" in result.stdout
    stats = json.loads(run(home, "stats", "--json").stdout)
    assert stats["documents"] == 53 and stats["domains"] == {"legal": 53}


@pytest.mark.slow
def test_search_json_carries_every_score_and_the_routing(demo_home):
    result = run(demo_home, "search", "when does the time limit to sue for fraud start", "--json", "--k", "3")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 3 and hits[0]["id"] == "legal-001"
    for hit in hits:
        assert set(hit) == {
            "id",
            "title",
            "text",
            "domain",
            "metadata",
            "score",
            "bm25_score",
            "dense_score",
            "routing",
            "fused_by",
            "text_chars",
        }
        assert hit["domain"] == "legal" and hit["metadata"]["topic"] and hit["text_chars"] == len(hit["text"])
        assert hit["fused_by"] == "client"  # the embedded store fuses with ddr_search.fusion
    assert hits[0]["bm25_score"] > 0 and hits[0]["dense_score"] > 0
    text = run(demo_home, "search", "eviction notice", "--domain", "legal", "--k", "2").stdout
    assert text.startswith("routing: general module only") and "legal-036" in text


@pytest.mark.slow
def test_delete_then_stats(demo_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    assert run(home, "delete", "legal-001", "nope").stdout.strip() == "deleted 1 documents (1 ids not found)"
    stats = run(home, "stats").stdout
    assert "documents: 49" in stats and "legal: 49" in stats
    hits = json.loads(run(home, "search", "fraud", "--mode", "bm25", "--json").stdout)
    assert "legal-001" not in {h["id"] for h in hits}


@pytest.mark.slow
def test_sigkill_during_a_real_ingest_then_rerun(demo_home, tmp_path):
    """The real command and encoder: kill mid-ingest, search the last state, re-run, every doc once."""
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    path = tmp_path / "short.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"s{i}", "text": f"short note {i} on tenancy"}) + "\n" for i in range(64))
    )
    env = {**os.environ, "DDR_HOME": str(home)}
    command = [str(Path(sys.executable).with_name("ddr-search")), "ingest", "--domain", "legal", "--batch-size", "8"]
    proc = subprocess.Popen([*command, str(path)], env=env, cwd=REPO, stderr=subprocess.DEVNULL)
    backend = EmbeddedBackend(Settings(home=home).embedded_dir)
    deadline = time.monotonic() + 120
    while backend.count() < 50 + 16:
        assert proc.poll() is None and time.monotonic() < deadline, "the ingest ended or stalled before the kill"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    partial = backend.count()
    backend.close()
    assert partial < 114 and (partial - 50) % 8 == 0
    hits = json.loads(run(home, "search", "fraud", "--mode", "bm25", "--json").stdout)
    assert hits[0]["id"] == "legal-001"
    done = subprocess.run([*command, str(path)], env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    stats = json.loads(run(home, "stats", "--json").stdout)
    assert stats["documents"] == 114


# -- the reader under the command -----------------------------------------------------------------


def test_reader_accepts_beir_ids_a_bom_blank_lines_and_record_domains(tmp_path):
    from ddr_search.data.documents import check_file, read_documents

    path = tmp_path / "beir.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + lines(
            json.dumps({"_id": "a", "title": "T", "text": "x"}),
            "",
            json.dumps({"id": 7, "text": "y", "domain": "case-law", "metadata": {"k": [1, 2]}}),
        )
    )
    check = check_file(path)
    assert check.documents == 2 and check.skipped == []
    docs = list(read_documents(path))
    assert [(d.id, d.domain) for d in docs] == [("a", None), ("7", "case-law")]
    assert docs[1].metadata == {"k": [1, 2]}
    assert [d.domain for d in read_documents(path, domain="legal")] == ["legal", "legal"]


def test_reader_streams_lazily(tmp_path):
    from ddr_search.data.documents import read_documents

    path = tmp_path / "big.jsonl"
    path.write_bytes(lines(*(json.dumps({"id": str(i), "text": "t"}) for i in range(1000))) + b"{not json\n")
    stream = read_documents(path)
    assert next(stream).id == "0"  # the bad last line is not read until the stream gets there


@pytest.mark.slow
def test_the_shipped_modules_route_a_health_question_and_leave_an_off_topic_one_general(demo_home, tmp_path):
    """The main job's promise with the modules the package ships: a MedQuAD question (a test topic the
    medical module never trained on) reaches the medical module with no domain given; a legal question
    (there is no legal module) stays on the general module; each hit says so."""
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    assert run(home, "ingest", "--domain", "medical", str(DEMO / "medquad.jsonl")).exit_code == 0
    health = json.loads(run(home, "search", "How to diagnose Diabetic Kidney Disease ?", "--json", "--k", "3").stdout)
    assert health[0]["routing"] == {"medical": 1.0}
    answers = {"medquad-NIDDK_0000033_0000033-7", "medquad-NIDDK_0000033_0000033-8"}  # MedQuAD's two answers
    assert {h["id"] for h in health[:2]} == answers
    legal = json.loads(run(home, "search", "time limit to sue for fraud", "--json", "--k", "3").stdout)
    assert all(hit["routing"] == {} for hit in legal) and legal[0]["id"] == "legal-001"


@pytest.mark.slow
def test_a_compiling_ingest_says_why_it_pauses(tmp_path):
    """The real command with DDR_PASSAGE_COMPILE=on: the ~20 s compile on the first batch is announced on
    stderr (the CLI shows warnings only, but this one line), and every document is stored."""
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps({"id": f"n{i}", "text": f"a note {i} on tenancy"}) + "\n" for i in range(6)))
    env = {**os.environ, "DDR_HOME": str(tmp_path / "home"), "DDR_PASSAGE_COMPILE": "on"}
    command = [str(Path(sys.executable).with_name("ddr-search")), "ingest", "--domain", "legal", str(path)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "compiling the passage encoder" in done.stderr
    assert "failed" not in done.stderr
    assert json.loads(run(tmp_path / "home", "stats", "--json").stdout)["documents"] == 6
