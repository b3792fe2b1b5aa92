"""The embedded source of truth: documents, metadata and vectors in one SQLite file (WAL).

Every write is one transaction that also bumps `generation`, so a crash loses at most the batch in
flight, several writer processes serialise on SQLite's write lock, and readers know when the derived
caches (vector matrix, BM25 index) are stale.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddr_search.errors import BackendError
from ddr_search.filters import Filters
from ddr_search.types import Document, IndexedDocument, passage_text

FORMAT_VERSION = 1
DB_FILE = "store.sqlite3"
BUSY_TIMEOUT_S = 60.0
_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    domain TEXT,
    metadata TEXT NOT NULL,
    encoder_version TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_domain ON documents(domain);
CREATE TABLE IF NOT EXISTS metadata_values (
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    num REAL,
    text TEXT
);
CREATE INDEX IF NOT EXISTS metadata_by_number ON metadata_values(key, kind, num);
CREATE INDEX IF NOT EXISTS metadata_by_text ON metadata_values(key, kind, text);
CREATE INDEX IF NOT EXISTS metadata_by_id ON metadata_values(id);
"""
# metadata_values: one row per scalar value of a document's metadata (a list gives one row per element,
# nested objects give dotted keys, null gives none), typed so that filters are index lookups, not a scan of
# every document's JSON. Kept in the same transaction as the documents table.

_UPSERT = """
INSERT INTO documents (id, title, text, domain, metadata, encoder_version, vector)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET
    title = excluded.title, text = excluded.text, domain = excluded.domain,
    metadata = excluded.metadata, encoder_version = excluded.encoder_version, vector = excluded.vector
"""


@dataclass(frozen=True, slots=True)
class Rows:
    """A consistent read of every document, in storage order, for building the derived caches."""

    generation: int
    dimension: int
    ids: list[str]
    domains: list[str | None]
    texts: list[str]  # title + text, as BM25 indexes them
    vectors: np.ndarray  # [n, dimension] float32


class DocumentStore:
    """SQLite access with one connection per process and thread (safe across fork, e.g. Celery prefork)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_FILE
        self._local = threading.local()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._init()

    # -- connections and transactions -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True)
            _retry(lambda: db.execute("PRAGMA journal_mode=WAL"))
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no committed write
            db.execute("PRAGMA foreign_keys=OFF")
        except sqlite3.Error as e:
            raise BackendError(f"cannot open the embedded store {self.path}: {e}") from e
        return db

    @property
    def db(self) -> sqlite3.Connection:
        pid = os.getpid()
        if getattr(self._local, "pid", None) != pid:  # new thread, or a forked child: never share a handle
            self._local.db = self._connect()
            self._local.pid = pid
        return self._local.db

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front so writers queue instead of deadlocking."""
        db = self.db
        _retry(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            _retry(lambda: db.execute("COMMIT"))

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent snapshot even while other processes write (WAL)."""
        db = self.db
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def _init(self) -> None:
        with self.write() as db:
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            if db.execute("SELECT 1 FROM meta WHERE key = 'metadata_values'").fetchone() is None:
                # a store written before the side table: fill it once from the documents' JSON
                for doc_id, metadata in db.execute("SELECT id, metadata FROM documents").fetchall():
                    db.executemany(_INSERT_VALUE, _metadata_rows(doc_id, json.loads(metadata)))
                db.execute("INSERT INTO meta VALUES ('metadata_values', '1')")
            found = db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()[0]
        if int(found) != FORMAT_VERSION:
            raise BackendError(
                f"{self.path} has store format {found}, this version reads format {FORMAT_VERSION}: "
                "use another DDR_HOME or re-ingest into a fresh one"
            )

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None and getattr(self._local, "pid", None) == os.getpid():
            db.close()
        self._local = threading.local()

    # -- writes -----------------------------------------------------------------------------------

    def upsert(self, documents: Sequence[IndexedDocument]) -> None:
        """Insert or replace by id, all or nothing, and bump the generation in the same transaction."""
        if not documents:
            return
        dims = {int(np.asarray(d.vector).shape[-1]) for d in documents}
        if len(dims) != 1:
            raise BackendError(f"one batch holds vectors of several dimensions: {sorted(dims)}")
        dimension = dims.pop()
        rows = [
            (
                d.document.id,
                d.document.title,
                d.document.text,
                d.document.domain,
                json.dumps(dict(d.document.metadata), ensure_ascii=False),
                d.encoder_version,
                np.ascontiguousarray(d.vector, dtype="<f4").tobytes(),
            )
            for d in documents
        ]
        with self.write() as db:
            stored = db.execute("SELECT value FROM meta WHERE key = 'dimension'").fetchone()
            if stored is None:
                db.execute("INSERT INTO meta VALUES ('dimension', ?)", (str(dimension),))
            elif int(stored[0]) != dimension:
                raise BackendError(
                    f"the embedded store {self.path} holds {stored[0]}-dimensional vectors, this batch has "
                    f"{dimension}: it was made with another encoder; use another DDR_HOME or delete the store"
                )
            db.executemany(_UPSERT, rows)
            ids = [d.document.id for d in documents]
            for chunk in _chunks(ids):
                db.execute(f"DELETE FROM metadata_values WHERE id IN ({_marks(chunk)})", chunk)
            db.executemany(
                _INSERT_VALUE,
                [row for d in documents for row in _metadata_rows(d.document.id, d.document.metadata)],
            )
            _bump(db)

    def delete(self, ids: Sequence[str]) -> int:
        removed = 0
        with self.write() as db:
            for chunk in _chunks(list(ids)):
                cursor = db.execute(f"DELETE FROM documents WHERE id IN ({_marks(chunk)})", chunk)
                removed += cursor.rowcount
                db.execute(f"DELETE FROM metadata_values WHERE id IN ({_marks(chunk)})", chunk)
            if removed:
                _bump(db)
        return removed

    # -- reads ------------------------------------------------------------------------------------

    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def get(self, ids: Sequence[str]) -> dict[str, Document]:
        found: dict[str, Document] = {}
        with self.read() as db:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                query = f"SELECT id, title, text, domain, metadata FROM documents WHERE id IN ({_marks(chunk)})"
                for id_, title, text, domain, metadata in db.execute(query, chunk):
                    found[id_] = Document(id=id_, title=title, text=text, domain=domain, metadata=json.loads(metadata))
        return found

    def ids_matching(self, filters: Filters) -> list[str]:
        """Ids whose metadata satisfies every condition: index lookups in metadata_values."""
        where, params = _sql_conditions(filters)
        with self.read() as db:
            return [row[0] for row in db.execute(f"SELECT id FROM documents WHERE {where}", params)]

    def versions(self, ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self.read() as db:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                query = f"SELECT id, encoder_version FROM documents WHERE id IN ({_marks(chunk)})"
                found.update(db.execute(query, chunk))
        return found

    def count(self, domain: str | None = None) -> int:
        if domain is None:
            return int(self.db.execute("SELECT count(*) FROM documents").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM documents WHERE domain = ?", (domain,)).fetchone()[0])

    def domain_counts(self) -> dict[str, int]:
        query = "SELECT domain, count(*) FROM documents WHERE domain IS NOT NULL GROUP BY domain ORDER BY domain"
        return {domain: int(n) for domain, n in self.db.execute(query)}

    def encoder_versions(self) -> dict[str, int]:
        query = "SELECT encoder_version, count(*) FROM documents GROUP BY encoder_version"
        return {version: int(n) for version, n in self.db.execute(query)}

    def rows(self) -> Rows:
        """Everything the caches need, read in one transaction so it matches the generation it reports."""
        with self.read() as db:
            generation = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
            stored = db.execute("SELECT value FROM meta WHERE key = 'dimension'").fetchone()
            dimension = int(stored[0]) if stored else 0
            count = int(db.execute("SELECT count(*) FROM documents").fetchone()[0])
            vectors = np.empty((count, dimension), dtype=np.float32)
            ids: list[str] = []
            domains: list[str | None] = []
            texts: list[str] = []
            query = "SELECT id, domain, title, text, vector FROM documents ORDER BY rowid"
            for row, (id_, domain, title, text, blob) in enumerate(db.execute(query)):
                ids.append(id_)
                domains.append(domain)
                texts.append(passage_text(title, text))
                vectors[row] = np.frombuffer(blob, dtype="<f4")
        return Rows(generation, dimension, ids, domains, texts, vectors)


def _bump(db: sqlite3.Connection) -> None:
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _marks(chunk: Sequence[object]) -> str:
    return ",".join("?" * len(chunk))


def _retry(action, attempts: int = 50):  # type: ignore[no-untyped-def]
    """SQLite's busy handler does not cover every lock (e.g. switching to WAL): back off and retry."""
    delay = 0.01
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or attempt == attempts - 1:
                raise BackendError(f"embedded store: {e}") from e
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    return None


_INSERT_VALUE = "INSERT INTO metadata_values (id, key, kind, num, text) VALUES (?, ?, ?, ?, ?)"


def _typed(value: object) -> tuple[str, float | None, str | None]:
    if isinstance(value, bool):
        return "bool", float(value), None
    if isinstance(value, int | float):
        return "num", float(value), None
    return "text", None, str(value)


def _metadata_rows(doc_id: str, metadata: object, prefix: str = "") -> list[tuple[object, ...]]:
    """The metadata_values rows of one document (see the schema's note)."""
    rows: list[tuple[object, ...]] = []
    items = metadata.items() if isinstance(metadata, Mapping) else []
    for key, value in items:
        path = f"{prefix}{key}"
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Mapping):
                rows += _metadata_rows(doc_id, item, f"{path}.")
            elif item is not None and not isinstance(item, list):
                rows.append((doc_id, path, *_typed(item)))
    return rows


def _value_test(values: Sequence[object]) -> tuple[str, list[object]]:
    """`kind = ... AND value IN (...)` over metadata_values rows, one clause per value kind."""
    parts, params = [], []
    for kind in ("text", "num", "bool"):
        chosen = [v for v in values if _typed(v)[0] == kind]
        if chosen:
            column = "text" if kind == "text" else "num"
            parts.append(f"(kind = '{kind}' AND {column} IN ({_marks(chosen)}))")
            params += [_typed(v)[2] if kind == "text" else _typed(v)[1] for v in chosen]
    return " OR ".join(parts), params


def _sql_conditions(filters: Filters) -> tuple[str, list[object]]:
    """ddr_search.filters conditions as one SQL predicate over `documents.id`. A list-valued key matches when
    any element does, as on the engines; date bounds compare ISO strings as text, as the engines compare
    keyword metadata; a key holding null or an empty list does not exist, as on the engines."""
    parts: list[str] = []
    params: list[object] = []
    for c in filters:
        rows = "SELECT id FROM metadata_values WHERE key = ?"
        if c.op == "exists":
            parts.append(f"id {'' if c.present else 'NOT '}IN ({rows})")
            params.append(c.key)
        elif c.op in ("in", "ne"):
            test, values = _value_test(c.values)
            parts.append(f"id {'' if c.op == 'in' else 'NOT '}IN ({rows} AND ({test}))")
            params += [c.key, *values]
        else:
            dates = isinstance(c.bounds[0][1], str)
            column, kind = ("text", "text") if dates else ("num", "num")
            sql_op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
            bounds = " AND ".join(f"{column} {sql_op[op]} ?" for op, _ in c.bounds)
            parts.append(f"id IN ({rows} AND kind = '{kind}' AND {bounds})")
            params += [c.key, *(b for _, b in c.bounds)]
    return " AND ".join(parts) or "1", params
