"""What the cluster connectors (OpenSearch, Elasticsearch) write alike: field names, the BM25 parameters and
analyzer rebuilt from the embedded backend's tokenizer, and the versioned index names behind an alias.

One home, so that both engines index the same tokens as the embedded store and name indices one way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ddr_search.errors import BackendError, ConfigError
from ddr_search.filters import Filters, query_clauses
from ddr_search.retrieval.bm25 import tokenize
from ddr_search.types import Document, IndexedDocument

# Lucene BM25 with the parameters the embedded backend (bm25s) uses, so every backend ranks alike.
BM25_K1 = 1.5
BM25_B = 0.75
# The embedded backend's BM25 tokens (ddr_search.retrieval.bm25.tokenize), rebuilt as an analyzer: the same
# 2+-character word pattern, lowercase, the same English stop-word list, then Snowball English (Porter2 in
# both Lucene and PyStemmer).
ANALYZER = "ddr_english"
JAVA_TOKEN_PATTERN = r"(?U)\b\w\w+\b"
VECTOR_FIELD = "embedding"
PASSAGE_FIELD = "passage"  # title + text (copy_to), the one field BM25 matches, as bm25s indexes title + text
SOURCE_EXCLUDES = [VECTOR_FIELD, PASSAGE_FIELD]
_VERSION_SLUG = re.compile(r"[^a-z0-9_]+")


def english_stopwords() -> list[str]:
    """bm25s's English stop words (what the embedded backend removes), sorted for a stable template."""
    import logging

    from bm25s.stopwords import STOPWORDS_EN

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import
    return sorted(set(STOPWORDS_EN))


def english_analysis() -> dict[str, Any]:
    """The `analysis` settings of the ddr_english analyzer (needs the analysis-common module)."""
    return {
        "tokenizer": {
            # bm25s / scikit-learn word tokens: 2+ word characters, Unicode-aware (Java's (?U) flag)
            "ddr_words": {"type": "pattern", "pattern": JAVA_TOKEN_PATTERN, "group": 0},
        },
        "filter": {
            "ddr_english_stop": {"type": "stop", "stopwords": english_stopwords()},
            "ddr_english_stemmer": {"type": "snowball", "language": "English"},
        },
        "analyzer": {
            ANALYZER: {
                "type": "custom",
                "tokenizer": "ddr_words",
                "filter": ["lowercase", "ddr_english_stop", "ddr_english_stemmer"],
            }
        },
    }


def bm25_terms(text: str) -> str:
    """The embedded backend's BM25 tokens of `text` (ddr_search.retrieval.bm25.tokenize), space-joined: what
    a cluster with whitespace analysis indexes and matches to rank exactly as the embedded store does."""
    return " ".join(tokenize(text)[0])


def version_slug(encoder_version: str) -> str:
    """An encoder version as a legal index-name part (lowercase, [a-z0-9_-])."""
    slug = _VERSION_SLUG.sub("-", encoder_version.lower()).strip("-")
    if not slug:
        raise ConfigError(f"encoder version {encoder_version!r} gives an empty index name part")
    return slug[:80]


def index_name(alias: str, encoder_version: str) -> str:
    """The concrete index behind `alias` for one encoder version: `<alias>-v<version>`."""
    return f"{alias}-v{version_slug(encoder_version)}"


def template_name(alias: str) -> str:
    return f"{alias}-template"


def filter_clauses(domain: str | None, filters: Filters = ()) -> list[dict[str, Any]]:
    """`term` on `domain`, then the metadata conditions (ddr_search.filters), as query DSL clauses."""
    clauses: list[dict[str, Any]] = [{"term": {"domain": domain}}] if domain is not None else []
    return clauses + query_clauses(filters)


def document_mappings(dimension: int, vector: dict[str, Any], *, client_tokens: bool = False) -> dict[str, Any]:
    """The mapping both engines give a version index, around their own `vector` field mapping: strict top
    level (a typo'd field is an error, not a new field), free-form `metadata` whose strings are exact values
    to filter on (keyword, not prose), title + text copied into the one BM25 field.

    `client_tokens`: the BM25 field holds `bm25_terms` of the passage, written by the client and split on
    whitespace by the cluster (the built-in `whitespace` analyzer, core Lucene); title and text stay unindexed.
    """
    if dimension <= 0:
        raise ConfigError(f"vector dimension must be positive, got {dimension}")
    text: dict[str, Any] = {"type": "text", "analyzer": ANALYZER, "copy_to": PASSAGE_FIELD}
    passage = {"type": "text", "analyzer": ANALYZER}
    if client_tokens:
        text, passage = {"type": "text", "index": False}, {"type": "text", "analyzer": "whitespace"}
    return {
        "dynamic": "strict",
        "dynamic_templates": [
            {
                "metadata_strings": {
                    "path_match": "metadata.*",
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword", "ignore_above": 1024},
                }
            }
        ],
        "properties": {
            "title": text,
            "text": text,
            PASSAGE_FIELD: passage,
            "domain": {"type": "keyword"},
            "encoder_version": {"type": "keyword"},
            "metadata": {"type": "object", "dynamic": True},
            VECTOR_FIELD: vector,
        },
    }


@dataclass
class ReindexReport:
    """What `ddr-search reindex` did on a cluster."""

    alias: str
    old_indices: list[str]
    new_index: str
    documents: int
    switched: bool
    deleted_old: bool = False
    note: str = ""


def domain_counts(search: Callable[[dict[str, Any]], Mapping[str, Any]]) -> dict[str, int]:
    """Documents per domain, paged with a composite aggregation (a plain terms agg would cap the list).
    `search` runs one aggregation body and returns its `aggregations.domains` result."""
    counts: dict[str, int] = {}
    after: dict[str, Any] | None = None
    while True:
        composite: dict[str, Any] = {"size": 1000, "sources": [{"domain": {"terms": {"field": "domain"}}}]}
        if after:
            composite["after"] = after
        agg = search({"domains": {"composite": composite}})
        for bucket in agg["buckets"]:
            counts[str(bucket["key"]["domain"])] = int(bucket["doc_count"])
        after = agg.get("after_key")
        if not after or not agg["buckets"]:
            return counts


def describe_status(status: int, body: object, fallback: str) -> str:
    """An engine's error answer as one line: status, type and reason, never the request (headers hold the
    credentials); 401 / 403 say what to check."""
    if status == 401:
        return f"{status} unauthorized: the cluster rejected the credentials (check username/password or key)"
    if status == 403:
        return f"{status} forbidden: the user lacks a permission this operation needs"
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return f"{status} {fallback}"
    root = (err.get("root_cause") or [err])[0]
    text = f"{status} {root.get('type', fallback)}: {root.get('reason', '')}".strip()
    cause = err.get("caused_by")
    if isinstance(cause, dict) and cause.get("reason") and cause.get("reason") not in text:
        text += f" ({cause['reason']})"
    if root.get("type") == "index_not_found_exception":
        text += " (run `ddr-search setup` first?)"
    return text


def item_reason(info: Mapping[str, Any]) -> str:
    """A bulk item's (or a failed sub-search's) error as `type: reason (cause)`."""
    error = info.get("error")
    if not isinstance(error, dict):
        return f"status {info.get('status')}: {error}"
    text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict) and cause.get("reason"):
        text += f" ({cause.get('reason')})"
    return text


def redact_url(url: str | None) -> str:
    """The URL without user-info (`https://user:pw@host` -> `https://host`): what messages and logs show."""
    if not url:
        return "<no url>"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def document_source(item: IndexedDocument, dimension: int | None) -> dict[str, Any]:
    """The `_source` both engines store for a document: its fields, encoder version and vector (checked
    against the index's dimension before anything is sent)."""
    doc = item.document
    vector = np.asarray(item.vector, dtype=np.float32).ravel()
    if dimension is not None and vector.shape[0] != dimension:
        raise BackendError(
            f"document {doc.id!r}: vector has {vector.shape[0]} dimensions, the index expects {dimension}"
        )
    source: dict[str, Any] = {
        "title": doc.title,
        "text": doc.text,
        "metadata": dict(doc.metadata),
        "encoder_version": item.encoder_version,
        VECTOR_FIELD: vector.tolist(),
    }
    if doc.domain is not None:
        source["domain"] = doc.domain
    return source


def document_from_source(doc_id: str, source: Mapping[str, Any]) -> Document:
    """A stored `_source` back into a Document (the vector and passage field left out)."""
    return Document(
        id=doc_id,
        text=source.get("text", ""),
        title=source.get("title", ""),
        domain=source.get("domain"),
        metadata=source.get("metadata") or {},
    )
