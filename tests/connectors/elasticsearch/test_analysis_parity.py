"""With `DDR_ELASTICSEARCH__ANALYZER=client` Elasticsearch ranks BM25 and hybrid as the embedded store does:
the client writes the embedded tokenizer's terms and the cluster only splits them on whitespace, so both run
Lucene BM25 (k1 1.5, b 0.75) over the same terms, on any cluster (the test nodes lack analysis-common).

Data: the MedQuAD answers and questions the package ships for the demo (real prose, CC BY 4.0).
"""

from __future__ import annotations

import json
from importlib import resources

import pytest

from connectors.elasticsearch import admin
from connectors.embedded import EmbeddedBackend
from connectors.shared import bm25_terms
from ddr_search.errors import ConfigError
from ddr_search.fusion import FusionConfig, Technique, fuse
from ddr_search.types import Document
from tests.connectors.elasticsearch.conftest import EsTarget
from tests.doubles import HashEncoder, indexed


def demo_data() -> tuple[list[Document], list[str]]:
    demo = resources.files("ddr_search") / "demo"
    rows = [json.loads(line) for line in (demo / "medquad.jsonl").read_text().splitlines() if line.strip()]
    docs = [Document(r["id"], r["text"], r.get("title", ""), r.get("domain")) for r in rows]
    questions = [json.loads(line)["question"] for line in (demo / "medquad-questions.jsonl").read_text().splitlines()]
    return docs, questions


def ranks_alike(ours: list[tuple[str, float]], reference: dict[str, float]) -> bool:
    """Tie-tolerant: every hit is in the reference's top 100, and none ranks above a hit whose reference
    score is over 4% higher. Lucene keeps a document's length in one byte (4 significant bits), which moves a
    BM25 score by up to ~3%; bm25s keeps lengths exactly."""
    if any(i not in reference for i, _ in ours):
        return False
    scores = [reference[i] for i, _ in ours]
    return all(scores[i] >= max(scores[i + 1 :]) * 0.96 for i in range(len(scores) - 1))


def test_client_analysis_writes_the_embedded_terms_and_ranks_as_the_embedded_store(
    es_target: EsTarget, tmp_path
) -> None:
    settings = es_target.settings.model_copy(update={"analyzer": "client"})
    target = EsTarget(es_target.name, settings, es_target.admin_settings)
    backend = target.backend(client_tokens=True)
    admin.setup(backend, settings, dimension=16, encoder_version="hash-a")
    docs, questions = demo_data()
    items = indexed(HashEncoder(), docs)
    backend.upsert(items)
    backend.refresh()
    embedded = EmbeddedBackend(tmp_path / "embedded", 16)
    embedded.upsert(items)
    encoder = HashEncoder()
    try:
        stored = backend.client.get(index=settings.index, id=docs[0].id)["_source"]["passage"]
        assert stored == bm25_terms(f"{docs[0].title} {docs[0].text}")
        for question in questions:
            ours, theirs = backend.bm25_search(question, 10), embedded.bm25_search(question, 100)
            assert ranks_alike(ours, dict(theirs)), question
            assert len({i for i, _ in ours} & {i for i, _ in theirs[:10]}) >= 9, question
            vector = encoder.encode_queries([question]).vectors[0]
            for config in (FusionConfig(), FusionConfig(Technique.RRF)):
                fused = backend.hybrid_search(question, vector, 10, config=config)
                want = fuse([theirs, embedded.dense_search(vector, 100)], config, k=10)
                assert len({f.id for f in fused} & {f.id for f in want}) >= 9, (question, config)
    finally:
        embedded.close()


def test_an_index_set_up_with_another_analysis_is_refused_in_one_line(es_target: EsTarget) -> None:
    backend = es_target.ready()  # analyzer=standard
    client = es_target.settings.model_copy(update={"analyzer": "client"})
    with pytest.raises(ConfigError, match=r"set up with DDR_ELASTICSEARCH__ANALYZER=english or standard, not client"):
        admin.setup(backend, client, dimension=16, encoder_version="hash-a")
