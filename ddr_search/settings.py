"""One pydantic-settings object, built at the edges (CLI, Celery app, client) and passed down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ddr_search.model.precision import PassageCompile, PassagePrecision
from ddr_search.types import RoutingMode


def default_home() -> Path:
    return Path.home() / ".ddr-search"


def credentials_out_of_url(data: object) -> object:
    """`https://user:pw@host` -> url `https://host`, username, password (a SecretStr): a password kept in the
    URL would show in every repr and dump of the settings. Explicit username / password win."""
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        return data
    parts = urlsplit(data["url"])
    if parts.username is None and parts.password is None:
        return data
    out = dict(data)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    out["url"] = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    if parts.username and not out.get("username"):
        out["username"] = unquote(parts.username)
    if parts.password and out.get("password") is None:
        out["password"] = unquote(parts.password)
    return out


class ClusterSettings(BaseModel):
    """What every cluster connection has: where, who, TLS, the alias, and the index layout."""

    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    verify_certs: bool = True
    timeout_s: float = 10.0
    index: str = "ddr-documents"  # the alias searched; versioned indices sit behind it
    shards: int = Field(default=1, ge=1)  # one shard: native hybrid fuses per shard before 3.5 (docs/opensearch.md)
    replicas: int = Field(default=1, ge=0)  # 0 on a single-node cluster, or it stays yellow

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_the_url(cls, data: object) -> object:
        return credentials_out_of_url(data)

    @field_validator("url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value


class OpenSearchSettings(ClusterSettings):
    """Connection to an existing OpenSearch cluster; with no `url` the embedded backend is used."""

    aws_region: str | None = None  # set to sign requests with AWS SigV4 (Amazon OpenSearch Service)
    aws_service: str = "es"  # "aoss" for OpenSearch Serverless
    # faiss: the k-NN default on real clusters; lucene: distributions without the native k-NN libraries
    # (the Maven Central zips the test nodes run). Both report inner products with the same score formula.
    knn_engine: Literal["faiss", "lucene"] = "faiss"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 128
    hnsw_ef_search: int = 256  # candidates per kNN query (at least k): exact-search recall at 100 candidates
    # client: BM25 + kNN in one _msearch, fused here (measured fastest: bench/reports/clusters.md);
    # auto: the native `hybrid` query + pipeline where it ranks exactly alike; native: always
    hybrid: Literal["auto", "native", "client"] = "client"


class ElasticsearchSettings(ClusterSettings):
    """Connection to an existing Elasticsearch 8.x / 9.x cluster (docs/elasticsearch.md)."""

    api_key: SecretStr | None = None  # instead of username / password
    # english: the embedded backend's tokens and Snowball stemming (needs analysis-common, on every real
    # cluster); standard: the standard tokenizer, lowercase and the same stop words (clusters without it);
    # client: this client tokenizes exactly as the embedded backend and the cluster splits on whitespace
    # (the same BM25 terms on any cluster, analysis-common or not)
    analyzer: Literal["english", "standard", "client"] = "english"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    num_candidates: int = 100  # per kNN search (at least k)


class EmbeddedSettings(BaseModel):
    """The embedded store's approximate index (connectors/embedded/ann.py; bench/reports/ann.md measured it)."""

    ann: Literal["auto", "off"] = "auto"  # auto: an HNSW graph once the store holds ann_min_documents
    ann_min_documents: int = Field(200_000, ge=1)  # below: exact search, fast enough there
    ann_m: int = Field(48, ge=4)
    ann_ef_construction: int = Field(200, ge=8)
    ann_ef_search: int = Field(1024, ge=1)  # recall@10 0.993 at 1M on SciFact train + NFCorpus dev queries


class SearchSettings(BaseModel):
    """Query-path defaults (docs/architecture.md section 6 measured these)."""

    k: int = 10
    candidates: int = 100  # each sub-query's depth before fusion
    normalization: Literal["min_max", "l2", "z_score", "rrf"] = "min_max"  # ddr_search.fusion.Technique values
    combination_weights: tuple[float, float] = (0.5, 0.5)  # (bm25, dense)
    top_k_modules: int = 2
    query_threads: int = 1  # one thread is 3x faster than two for a single query (docs/architecture.md section 6)


class WorkerSettings(BaseModel):
    """Celery ingest (workers/, docs/workers.md); used only when `broker_url` is set."""

    jobs_url: SecretStr | None = None  # Redis holding job records; None = the broker when it is Redis
    queue: str = "ddr-ingest"
    visibility_timeout_s: int = 600  # Redis broker: an unacked batch is redelivered after this long
    stall_timeout_s: float = 300.0  # `ingest` stops waiting (the job stays queued) after this long without progress
    max_retries: int = 5  # transient backend errors, exponential backoff 1, 2, 4, ... s (max 60 s)


class Settings(BaseSettings):
    """Everything configurable, from env (`DDR_*`, nested with `__`) or an optional `.env` file."""

    model_config = SettingsConfigDict(env_prefix="DDR_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    home: Path = Field(default_factory=default_home)
    backbone: Path | None = None  # a local BERT-family folder; None = the packaged all-MiniLM-L6-v2
    modules: Path | None = None  # a module store; None = the store shipped with the package, if any
    onnx_dir: Path | None = None  # exported encoders; None = <home>/onnx when it exists
    routing: RoutingMode = RoutingMode.AUTO  # docs/routing.md: why auto, not the paper's top-k
    passage_precision: PassagePrecision = PassagePrecision.AUTO  # bf16 where the CPU has it (model/precision.py)
    passage_compile: PassageCompile = PassageCompile.AUTO  # torch passages compiled past 8,192 (model/compiled.py)
    broker_url: SecretStr | None = None  # redis://... or amqp://...; None = ingest in-process
    batch_size: int = 64
    opensearch: OpenSearchSettings = Field(default_factory=OpenSearchSettings)
    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)

    @model_validator(mode="before")
    @classmethod
    def _flat_opensearch_names(cls, data: object) -> object:
        """Also accept the flat names of earlier releases (DDR_OPENSEARCH_URL, ...); the nested `__` form wins."""
        if not isinstance(data, dict) or isinstance(data.get("opensearch"), OpenSearchSettings):
            return data
        section = dict(data.get("opensearch") or {})
        for field in ("url", "username", "password", "ca_file", "aws_region"):
            value = os.environ.get(f"DDR_OPENSEARCH_{field.upper()}")
            if value is not None:
                section.setdefault(field, value)
        return {**data, "opensearch": section} if section else data

    @property
    def embedded_dir(self) -> Path:
        return self.home / "embedded"
