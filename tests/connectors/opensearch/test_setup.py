"""`setup` on the real nodes (index template, mapping, aliases, pipelines): idempotent, right shapes."""

from __future__ import annotations

import pytest

from connectors import shared
from connectors.opensearch import admin, schema
from ddr_search.errors import BackendError
from ddr_search.fusion import FusionConfig, Technique
from tests.connectors.opensearch.conftest import Target


def run_setup(
    target: Target, dimension: int = 16, version: str = "hash-a", fusion_configs: list[FusionConfig] | None = None
) -> admin.SetupReport:
    backend = target.backend(dimension)
    configs = admin.default_fusion_configs((0.5, 0.5)) if fusion_configs is None else fusion_configs
    return admin.setup(backend, target.settings, dimension=dimension, encoder_version=version, fusion_configs=configs)


def test_setup_creates_template_versioned_index_and_alias(target: Target) -> None:
    report = run_setup(target)
    alias = target.settings.index
    index = f"{alias}-vhash-a"
    assert report.index == index
    assert report.actions == [f"created index {index}", f"alias {alias} -> {index}"]
    client = target.client()
    assert client.indices.get_alias(name=alias) == {index: {"aliases": {alias: {"is_write_index": True}}}}
    mapping = client.indices.get_mapping(index=index)[index]["mappings"]
    vector = mapping["properties"]["embedding"]
    assert vector["type"] == "knn_vector" and vector["dimension"] == 16
    assert vector["method"]["engine"] == target.settings.knn_engine and vector["method"]["space_type"] == "innerproduct"
    assert vector["method"]["parameters"] == {"m": 16, "ef_construction": 128}
    assert mapping["properties"]["domain"] == {"type": "keyword"}
    assert mapping["properties"]["encoder_version"] == {"type": "keyword"}
    assert mapping["_meta"]["encoder_version"] == "hash-a"
    settings = client.indices.get_settings(index=index)[index]["settings"]["index"]
    assert str(settings["knn"]).lower() == "true"
    template = client.indices.get_index_template(name=f"{alias}-template")["index_templates"][0]["index_template"]
    assert template["index_patterns"] == [f"{alias}-v*"]
    assert template["template"]["mappings"]["properties"]["embedding"]["dimension"] == 16


def test_setup_is_idempotent(target: Target) -> None:
    run_setup(target)
    client = target.client()
    before = (
        client.indices.get_alias(name=target.settings.index),
        client.indices.get_mapping(index=f"{target.settings.index}-vhash-a"),
    )
    again = run_setup(target)
    assert again.actions == []  # nothing changed
    after = (
        client.indices.get_alias(name=target.settings.index),
        client.indices.get_mapping(index=f"{target.settings.index}-vhash-a"),
    )
    assert after == before


def test_setup_leaves_an_alias_serving_another_encoder_version(target: Target) -> None:
    run_setup(target, version="hash-a")
    report = run_setup(target, version="hash-b")
    assert report.actions == []
    assert any("ddr-search reindex" in n for n in report.notes)
    assert list(target.client().indices.get_alias(name=target.settings.index)) == [f"{target.settings.index}-vhash-a"]


def test_setup_refuses_a_dimension_change_on_an_existing_index(target: Target) -> None:
    run_setup(target, dimension=16)
    with pytest.raises(BackendError, match="16-dimensional vectors but the encoder makes 8"):
        run_setup(target, dimension=8)


def test_setup_refuses_a_concrete_index_named_like_the_alias(target: Target) -> None:
    target.client().indices.create(index=target.settings.index)
    with pytest.raises(BackendError, match="is a concrete index, not an alias"):
        run_setup(target)


def test_setup_puts_pipelines_only_where_neural_search_runs(target: Target) -> None:
    report = run_setup(target)
    alias = target.settings.index
    if not report.features.native_hybrid:  # 3.5.0 here: k-NN without neural-search
        assert target.name != "os2.19"
        assert report.pipelines == []
        assert any("client over _msearch" in n for n in report.notes)
        return
    assert report.pipelines == [f"{alias}-min_max-0.5-0.5", f"{alias}-rrf-60"]
    client = target.client()
    stored = client.transport.perform_request("GET", f"/_search/pipeline/{alias}-min_max-0.5-0.5")
    processor = stored[f"{alias}-min_max-0.5-0.5"]["phase_results_processors"][0]
    assert processor == {
        "normalization-processor": {
            "normalization": {"technique": "min_max"},
            "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.5, 0.5]}},
        }
    }
    rrf = client.transport.perform_request("GET", f"/_search/pipeline/{alias}-rrf-60")
    assert (
        rrf[f"{alias}-rrf-60"]["phase_results_processors"][0]
        == schema.pipeline_body(FusionConfig(Technique.RRF), report.features.version)["phase_results_processors"][0]
    )


def test_what_the_version_cannot_fuse_gets_no_pipeline(native_target: Target) -> None:
    """2.19: no z_score, no RRF weights (checked on the node); those fuse on the client instead."""
    report = run_setup(
        native_target,
        fusion_configs=[FusionConfig(Technique.Z_SCORE, (0.5, 0.5)), FusionConfig(Technique.RRF, (0.3, 0.7))],
    )
    if report.features.version < (3, 0, 0):
        assert report.pipelines == []


def test_pipeline_bodies_follow_each_versions_shape() -> None:
    weighted = schema.pipeline_body(FusionConfig(Technique.MIN_MAX, (0.3, 0.7)), (2, 19, 1))
    assert weighted["phase_results_processors"] == [
        {
            "normalization-processor": {
                "normalization": {"technique": "min_max"},
                "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.3, 0.7]}},
            }
        }
    ]
    rrf = schema.pipeline_body(FusionConfig(Technique.RRF, rank_constant=20), (2, 19, 1))
    assert rrf["phase_results_processors"] == [
        {"score-ranker-processor": {"combination": {"technique": "rrf", "parameters": {"rank_constant": 20}}}}
    ]  # 2.19 ignores a top-level one
    rrf = schema.pipeline_body(FusionConfig(Technique.RRF, rank_constant=20), (3, 5, 0))
    assert rrf["phase_results_processors"] == [
        {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 20}}}
    ]
    assert shared.index_name("ddr-documents", "MiniLM/General@3") == "ddr-documents-vminilm-general-3"
    names = {
        schema.pipeline_name("a", c)
        for c in (
            FusionConfig(Technique.RRF, (0.5, 0.5)),
            FusionConfig(Technique.MIN_MAX, (0.3, 0.7)),
            FusionConfig(Technique.L2, (0.3, 0.7)),
        )
    }
    assert names == {"a-rrf-60", "a-min_max-0.3-0.7", "a-l2-0.3-0.7"}  # weighted RRF fuses on the client


def test_analyzer_gives_the_embedded_backend_tokens(target: Target) -> None:
    """Same BM25 tokens on both backends (pattern tokenizer, bm25s stop words, Snowball English)."""
    from ddr_search.retrieval.bm25 import tokenize

    run_setup(target)
    texts = [
        "A 5-year RCT: T-cells (CD4+) weren't affected; 2.5mg/kg of Vitamin-D3 in the mice's lungs",
        "The statute of limitations for fraud claims generally begins when the fraud is discovered.",
        "élan naïve Zürich",
    ]
    client = target.client()
    for text in texts:
        tokens = client.indices.analyze(index=target.settings.index, body={"analyzer": shared.ANALYZER, "text": text})[
            "tokens"
        ]
        assert [t["token"] for t in tokens] == tokenize(text)[0]
