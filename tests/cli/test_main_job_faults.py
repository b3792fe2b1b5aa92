"""What a new user hits in the main job: valid JSON that cannot be stored, ids moving between domains,
resuming an interrupted ingest, bad settings, secrets in a URL. Each is one clear line, and nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.embedded import EmbeddedBackend
from ddr_search.cli.main import cli
from ddr_search.client import DDRSearch
from ddr_search.errors import InputError
from ddr_search.ingest import IngestInterrupted
from ddr_search.settings import Settings
from tests.doubles import CountingEncoder, HashingEncoder


def docs(n: int, prefix: str = "d", **extra: object) -> list[dict[str, object]]:
    return [{"id": f"{prefix}{i}", "text": f"document {i} about topic {i % 5}", **extra} for i in range(n)]


def write(path: Path, records: list[dict[str, object]] | list[str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def count(home: Path) -> int:
    backend = EmbeddedBackend(Settings(home=home).embedded_dir)
    try:
        return backend.count()
    finally:
        backend.close()


def test_a_lone_surrogate_on_line_150_fails_before_anything_is_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    records = [json.dumps(r) for r in docs(200)]
    records[149] = '{"id": "d149", "text": "x \\udc80 y"}'  # valid JSON, not storable Unicode
    path = write(tmp_path / "corpus.jsonl", records)
    with DDRSearch(Settings(home=home), encoder=HashingEncoder()) as client:
        with pytest.raises(InputError, match=r"corpus.jsonl:150: field 'text': .*not valid Unicode"):
            client.ingest(path)
        assert client.backend.count() == 0
        report = client.ingest(path, skip_invalid=True)
    assert report.indexed == 199 and [e.line for e in report.skipped] == [150]


def test_an_id_moving_to_another_domain_is_refused_unless_asked_on_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"DDR_HOME": str(home)}
    cooking = write(tmp_path / "a.jsonl", docs(3))
    astro = write(tmp_path / "b.jsonl", [*docs(2, prefix="x"), {"id": "d1", "text": "stars and planets"}])
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ddr_search.factory.build_encoder", lambda settings: HashingEncoder())
        assert runner.invoke(cli, ["ingest", "--domain", "cooking", str(cooking)], env=env).exit_code == 0
        refused = runner.invoke(cli, ["ingest", "--domain", "astro", str(astro)], env=env)
        assert refused.exit_code == 1
        assert (
            "1 documents are stored already under another domain and would move: id 'd1' (cooking -> astro)"
            in refused.stderr
        )
        assert count(home) == 3  # nothing written
        moved = runner.invoke(cli, ["ingest", "--domain", "astro", "--allow-domain-change", str(astro)], env=env)
        assert moved.exit_code == 0, moved.output
        assert "1 replaced documents stored under the same id" in moved.stdout
    with DDRSearch(Settings(home=home), encoder=HashingEncoder()) as client:
        assert client.backend.get(["d1"])["d1"].domain == "astro"
        assert client.backend.domain_counts() == {"astro": 3, "cooking": 2}


def test_a_resumed_ingest_encodes_only_what_is_missing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = write(tmp_path / "corpus.jsonl", docs(50))
    interrupted = CountingEncoder(interrupt_on_call=3)
    with (
        DDRSearch(Settings(home=home), encoder=interrupted) as client,
        pytest.raises(IngestInterrupted, match=r"interrupted: 20 of 50 documents are stored .* Run the same"),
    ):
        client.ingest(path, batch_size=10)
    resumed = CountingEncoder()
    with DDRSearch(Settings(home=home), encoder=resumed) as client:
        report = client.ingest(path, batch_size=10)
    assert resumed.passages == 30  # the 20 committed before Ctrl-C are not encoded again
    assert (report.indexed, report.written, report.unchanged, report.replaced) == (50, 30, 20, 0)
    changed = write(tmp_path / "changed.jsonl", [*docs(49), {"id": "d49", "text": "new text"}])
    again = CountingEncoder()
    with DDRSearch(Settings(home=home), encoder=again) as client:
        report = client.ingest(changed, batch_size=10)
    assert again.passages == 1 and (report.written, report.unchanged, report.replaced) == (1, 49, 1)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DDR_ROUTING": "bogus"}, "invalid setting DDR_ROUTING='bogus'"),
        ({"DDR_SEARCH__NORMALIZATION": "minmax"}, "invalid setting DDR_SEARCH__NORMALIZATION='minmax'"),
    ],
)
def test_a_bad_setting_is_one_line_at_start_up(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    result = CliRunner().invoke(cli, ["stats"], env={"DDR_HOME": str(tmp_path / "home"), **env})
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), result.stderr


def test_ddr_home_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    result = CliRunner().invoke(cli, ["stats"], env={"DDR_HOME": str(home)})
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr


def test_a_password_inside_the_opensearch_url_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDR_OPENSEARCH__URL", "https://ddr:top%40secret@search.example.com:9200")
    settings = Settings()
    assert settings.opensearch.url == "https://search.example.com:9200"
    assert settings.opensearch.username == "ddr"
    assert settings.opensearch.password is not None
    assert settings.opensearch.password.get_secret_value() == "top@secret"
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "secret" not in shown.replace("SecretStr", "")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": 123}, "query must be a string, got int"),
        ({"query": "  "}, "the query is empty"),
        ({"query": "q", "k": 2.5}, "k must be a whole number >= 1, got 2.5"),
        ({"query": "q", "k": 0}, "k must be a whole number >= 1, got 0"),
        ({"query": "q", "mode": "fuzzy"}, "mode must be one of hybrid, dense, bm25, got 'fuzzy'"),
        ({"query": "q", "routing": "random"}, "routing must be one of"),
    ],
)
def test_the_python_client_raises_input_error_for_bad_arguments_before_loading_a_model(
    tmp_path: Path, kwargs, message: str
) -> None:
    client = DDRSearch(Settings(home=tmp_path / "home"))
    with pytest.raises(InputError, match=message):
        client.search(**kwargs)
    assert client._encoder is None  # nothing was loaded to find out


def test_json_hits_carry_a_snippet_unless_asked_for_the_full_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    long_text = "verbose " * 1000
    with DDRSearch(Settings(home=home), encoder=HashingEncoder()) as client:
        client.ingest([{"id": "big", "text": long_text}, {"id": "small", "text": "verbose note"}])
    monkeypatch.setattr("ddr_search.factory.build_encoder", lambda settings: HashingEncoder())
    env = {"DDR_HOME": str(home)}
    short = json.loads(CliRunner().invoke(cli, ["search", "verbose", "--json", "--mode", "bm25"], env=env).stdout)
    big = next(h for h in short if h["id"] == "big")
    assert big["text_chars"] == len(long_text) and len(big["text"]) == 504 and big["text"].endswith(" ...")
    full = json.loads(
        CliRunner().invoke(cli, ["search", "verbose", "--json", "--mode", "bm25", "--full-text"], env=env).stdout
    )
    assert next(h for h in full if h["id"] == "big")["text"] == long_text


def test_cli_filters_reach_the_search(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with DDRSearch(Settings(home=home), encoder=HashingEncoder()) as client:
        client.ingest(
            [
                {"id": f"d{y}", "text": "court ruling", "metadata": {"year": y, "lang": "en" if y % 2 else "de"}}
                for y in range(2015, 2025)
            ]
        )
    env = {"DDR_HOME": str(home)}
    args = [
        "search",
        "court",
        "--mode",
        "bm25",
        "--json",
        "--filter",
        "year>=2020",
        "--filter",
        "year<2023",
        "--filter",
        "lang=en,fr",
    ]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert sorted(h["id"] for h in json.loads(result.stdout)) == ["d2021"]
    bad = CliRunner().invoke(cli, ["search", "court", "--mode", "bm25", "--filter", "year~2020"], env=env)
    assert bad.exit_code == 1 and "--filter 'year~2020': write key=value" in bad.stderr


def test_a_store_trained_under_ddr_home_is_the_one_search_uses_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from ddr_search.factory import PRETRAINED_DIR, default_module_store

    home = tmp_path / "home"
    assert default_module_store(Settings(home=home)) == PRETRAINED_DIR
    shutil.copytree(PRETRAINED_DIR, home / "modules")  # what `ddr-search train domain` writes by default
    with caplog.at_level("WARNING"):
        assert default_module_store(Settings(home=home)) == home / "modules"
    assert "using the module store trained under DDR_HOME" in caplog.text
    assert default_module_store(Settings(home=home, modules=PRETRAINED_DIR)) == PRETRAINED_DIR


def test_an_unknown_domain_fails_before_the_model_loads(tmp_path: Path) -> None:
    from ddr_search.errors import UnknownModuleError

    client = DDRSearch(Settings(home=tmp_path / "home"))
    with pytest.raises(UnknownModuleError, match="unknown domain 'astrology'"):
        client.search("stars", domain="astrology")
    assert client._encoder is None
