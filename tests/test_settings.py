"""Settings from the environment: both spellings of the OpenSearch variables, secrets masked."""

from __future__ import annotations

from ddr_search.settings import Settings


def test_flat_design_names_are_accepted(monkeypatch):
    monkeypatch.setenv("DDR_OPENSEARCH_URL", "https://search.example.com:9200/")
    monkeypatch.setenv("DDR_OPENSEARCH_PASSWORD", "hunter2")
    settings = Settings()
    assert settings.opensearch.url == "https://search.example.com:9200"
    assert settings.opensearch.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)


def test_nested_names_win_over_flat_ones(monkeypatch):
    monkeypatch.setenv("DDR_OPENSEARCH_URL", "https://flat:9200")
    monkeypatch.setenv("DDR_OPENSEARCH__URL", "https://nested:9200")
    assert Settings().opensearch.url == "https://nested:9200"


def test_embedded_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv("DDR_OPENSEARCH_URL", raising=False)
    monkeypatch.delenv("DDR_OPENSEARCH__URL", raising=False)
    monkeypatch.setenv("DDR_HOME", str(tmp_path))
    settings = Settings()
    assert settings.opensearch.url is None
    assert settings.embedded_dir == tmp_path / "embedded"
