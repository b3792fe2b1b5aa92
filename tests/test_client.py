"""DDRSearch, the Python client: ingest (paths and in-memory), search, delete, stats, restarts, settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ddr_search import DDRSearch as LazyDDRSearch
from ddr_search.client import DDRSearch
from ddr_search.errors import ConfigError, InputError
from ddr_search.settings import Settings
from ddr_search.types import Document
from tests.doubles import HashingEncoder

REPO = Path(__file__).resolve().parents[1]
DOCS = [
    {"id": "c1", "title": "Tenancy", "text": "the landlord must return the deposit", "metadata": {"year": 2020}},
    {"id": "c2", "title": "Cardiology", "text": "statins lower cholesterol"},
    Document(id="c3", title="Caching", text="invalidate the cache when data changes", metadata={"tags": ["x"]}),
]


@pytest.fixture()
def client(tmp_path):
    # Encoder test double (tests/connectors/embedded/doubles.py): this file tests the client's wiring.
    with DDRSearch(Settings(home=tmp_path / "home"), encoder=HashingEncoder()) as ddr:
        yield ddr


def test_the_package_exports_the_client():
    assert LazyDDRSearch is DDRSearch


def test_ingest_in_memory_documents_then_search_delete_stats(client):
    report = client.ingest(DOCS, domain="misc")
    assert report.indexed == 3 and report.skipped == []
    hits = client.search("landlord deposit", mode="bm25")
    assert hits[0].id == "c1" and hits[0].metadata == {"year": 2020} and hits[0].domain == "misc"
    assert client.search("cache", mode="bm25")[0].metadata == {"tags": ["x"]}
    assert client.stats()["documents"] == 3 and client.stats()["domains"] == {"misc": 3}
    assert client.delete(["c1", "zzz"]) == 1
    assert [h.id for h in client.search("landlord deposit", mode="bm25")] == []
    assert client.stats()["encoder_versions"] == {"hashing-test-double": 2}


def test_ingest_a_path_and_a_beir_corpus(client, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": str(i), "title": "", "text": f"beir doc {i}"}) + "\n" for i in range(7)))
    assert client.ingest(path).indexed == 7
    assert client.stats()["domains"] == {}
    with pytest.raises(InputError, match="7 documents are stored already under another domain"):
        client.ingest(str(path), domain="beir")  # ids are global: a domain change must be asked for
    assert client.ingest(str(path), domain="beir", allow_domain_change=True).indexed == 7
    assert client.stats()["documents"] == 7 and client.stats()["domains"] == {"beir": 7}


def test_invalid_in_memory_documents_write_nothing(client):
    client.ingest(DOCS[:1])
    with pytest.raises(InputError, match=r"<documents>:2: field 'text'"):
        client.ingest([{"id": "ok", "text": "fine"}, {"id": "bad"}])
    with pytest.raises(InputError, match="duplicate id 'a'"):
        client.ingest([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}])
    with pytest.raises(InputError, match="no documents"):
        client.ingest([])
    assert client.stats()["documents"] == 1


def test_hybrid_search_returns_every_score(client):
    client.ingest(DOCS)
    hits = client.search("Tenancy the landlord must return the deposit", k=3)  # = its passage text
    assert hits[0].id == "c1"
    assert hits[0].bm25_score is not None and hits[0].dense_score == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 3


def test_state_survives_a_process_restart(client):
    client.ingest(DOCS, domain="misc")
    client.close()
    code = (
        "import sys; from ddr_search.client import DDRSearch; from ddr_search.settings import Settings; "
        "c = DDRSearch(Settings(home=sys.argv[1])); print(c.stats()['documents'], "
        "c.search('statins', mode='bm25')[0].id, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(client.settings.home)], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "c2", "False"]  # stats and bm25 search load no model


def test_settings_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DDR_HOME", str(tmp_path / "from-env"))
    ddr = DDRSearch(encoder=HashingEncoder())
    ddr.ingest(DOCS[:2])
    assert (tmp_path / "from-env" / "embedded" / "store.sqlite3").exists()
    ddr.close()


def test_bm25_only_use_never_loads_the_encoder(tmp_path):
    home = tmp_path / "home"
    with DDRSearch(Settings(home=home), encoder=HashingEncoder()) as seeding:
        seeding.ingest(DOCS)
    ddr = DDRSearch(Settings(home=home))
    assert ddr.search("statins", mode="bm25")[0].id == "c2"
    assert ddr.stats()["documents"] == 3 and ddr.delete(["c2"]) == 1
    assert ddr._encoder is None


def test_enqueue_without_a_broker_is_a_clear_error(client, tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "x"}) + "\n")
    with pytest.raises(ConfigError, match="enqueue needs a broker: set DDR_BROKER_URL"):
        client.enqueue(path)
