"""deploy/ stays in step with the code: template and pipeline JSON equal what `setup` writes; the
compose file runs the proven OpenSearch 2.19.1 with security on and no secret in the file; the role file
is valid JSON naming the default alias."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from connectors.opensearch import admin, schema
from ddr_search.fusion import FusionConfig, Technique
from ddr_search.settings import OpenSearchSettings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_template_json_is_what_setup_writes() -> None:
    on_disk = json.loads((DEPLOY / "opensearch" / "index-template.json").read_text())
    assert on_disk == schema.index_template(OpenSearchSettings(), 384)


def test_pipeline_json_is_what_setup_writes() -> None:
    configs = [*admin.default_fusion_configs((0.5, 0.5)), FusionConfig(Technique.MIN_MAX, (0.3, 0.7))]
    files = sorted((DEPLOY / "opensearch" / "pipelines").glob("*.json"))
    assert [f.stem for f in files] == sorted(schema.pipeline_name("ddr-documents", c) for c in configs)
    for config in configs:
        path = DEPLOY / "opensearch" / "pipelines" / f"{schema.pipeline_name('ddr-documents', config)}.json"
        assert json.loads(path.read_text()) == schema.pipeline_body(config, schema.PROVEN_VERSION)


def test_compose_runs_the_proven_opensearch_with_security_redis_and_a_worker() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"opensearch", "redis", "worker", "setup"} <= set(services)
    opensearch = services["opensearch"]
    assert opensearch["image"].split(":")[1] == ".".join(map(str, schema.PROVEN_VERSION))
    env = opensearch["environment"]
    assert "DISABLE_SECURITY_PLUGIN" not in env and "plugins.security.disabled" not in env
    worker_env = services["worker"]["environment"]
    assert worker_env["DDR_OPENSEARCH__URL"].startswith("https://")
    assert worker_env["DDR_OPENSEARCH__CA_FILE"]
    assert worker_env["DDR_OPENSEARCH__PASSWORD"].startswith("${")  # from the environment, not the file
    assert worker_env["DDR_BROKER_URL"].startswith("redis://redis")
    assert services["worker"]["command"][:2] == ["ddr-search", "worker"]
    assert (DEPLOY / "Dockerfile").exists()


def test_security_role_covers_the_default_alias_only() -> None:
    role = json.loads((DEPLOY / "opensearch" / "security-role.json").read_text())
    assert [rule["index_patterns"] for rule in role["index_permissions"]] == [["ddr-documents*"]]
    assert not any(p == "*" or p.startswith("cluster:admin/opendistro") for p in role["cluster_permissions"])
