"""`ddr-search setup` and `ddr-search reindex` end to end on the real nodes (encoder: the hash double)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ddr_search.cli.main import cli
from tests.connectors.opensearch.conftest import Target
from tests.doubles import HashEncoder, indexed


@pytest.fixture()
def env(target: Target, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("DDR_OPENSEARCH__KNN_ENGINE", target.settings.knn_engine)
    monkeypatch.setenv("DDR_OPENSEARCH__REPLICAS", str(target.settings.replicas))
    monkeypatch.setenv("DDR_OPENSEARCH__URL", target.settings.url or "")
    monkeypatch.setenv("DDR_OPENSEARCH__INDEX", target.settings.index)
    return {}


def test_setup_twice(env: dict[str, str], target: Target) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["setup", "--dimension", "16", "--encoder-version", "hash-a"])
    assert first.exit_code == 0, first.output
    alias = target.settings.index
    assert f"created index {alias}-vhash-a" in first.output
    expected = {
        "os2.19": "cluster: opensearch 2.19.1; plugins: opensearch-knn, opensearch-neural-search; "
        "native hybrid query: available",
        "os3.5": "cluster: opensearch 3.5.0; plugins: opensearch-knn; native hybrid query: no (hybrid fuses "
        "on the client over _msearch)",
    }
    if target.name in expected:
        assert expected[target.name] in first.output
    second = runner.invoke(cli, ["setup", "--dimension", "16", "--encoder-version", "hash-a"])
    assert second.exit_code == 0 and "nothing to change: already set up" in second.output


def test_setup_print_template_changes_nothing(env: dict[str, str], target: Target) -> None:
    result = CliRunner().invoke(cli, ["setup", "--dimension", "8", "--encoder-version", "x", "--print-template"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["index_template"]["template"]["mappings"]["properties"]["embedding"]["dimension"] == 8
    assert set(out["pipelines"]) == {f"{target.settings.index}-min_max-0.5-0.5", f"{target.settings.index}-rrf-60"}
    assert not target.client().indices.exists_alias(name=target.settings.index)


def test_reindex_cli_switches(env: dict[str, str], target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["setup", "--dimension", "16", "--encoder-version", "hash-a"]).exit_code == 0
    target.backend(16).upsert(indexed(HashEncoder("hash-a")))
    target.backend(16).refresh()
    monkeypatch.setattr("ddr_search.factory.build_encoder", lambda settings: HashEncoder("hash-b"))
    result = runner.invoke(cli, ["reindex", "--batch-size", "3", "--delete-old"])
    assert result.exit_code == 0, result.output
    alias = target.settings.index
    assert f"10 documents re-embedded into {alias}-vhash-b; {alias} switched from {alias}-vhash-a" in result.output
    again = runner.invoke(cli, ["reindex"])
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_cli_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DDR_OPENSEARCH__URL", raising=False)
    monkeypatch.setattr("ddr_search.factory.build_encoder", lambda settings: HashEncoder())
    result = CliRunner().invoke(cli, ["reindex"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: reindex works on a cluster: set DDR_OPENSEARCH__URL or DDR_ELASTICSEARCH__URL (the embedded store "
        "needs none)"
    )
