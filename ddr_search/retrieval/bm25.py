"""BM25 over bm25s (Lucene variant): the lexical half of hybrid search, for the embedded backend and eval.

Settings reproduce the published bm25s BEIR numbers (docs/architecture.md section 6): Lucene BM25, k1 1.5, b 0.75,
lowercased scikit-learn-style word tokens, English stopwords removed, Snowball English stemming
(PyStemmer). Callers index ``title + " " + text``. bm25s precomputes every term's per-document score
into a sparse matrix, so a query is a handful of sparse row sums: hundreds to thousands of queries per
second where rank-bm25 rescans the corpus in Python (bench/beir_baselines.py measures both).

Only documents that contain at least one query term are returned, as a Lucene `match` query does,
so a fused hybrid list never carries zero-score BM25 "hits".
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

from ddr_search.errors import InputError
from ddr_search.types import ScoredIds

TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # bm25s / scikit-learn CountVectorizer default
IDS_FILE = "ids.json"
PARAMS_FILE = "ddr_bm25.json"


@functools.cache
def _bm25s() -> ModuleType:
    """Import bm25s once; it sets its own logger to DEBUG on import, which would chat through our CLI."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


@functools.cache
def _stopwords() -> frozenset[str]:
    return frozenset(_bm25s().stopwords.STOPWORDS_EN)


@functools.cache
def _stemmer() -> object:  # PyStemmer has no type stubs
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts: str | Sequence[str]) -> list[list[str]]:
    """Lowercase, split into word tokens of 2+ characters, drop English stopwords, Snowball-stem.

    Gives the same tokens as ``bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer("english"),
    return_ids=False)``; one function so that indexing, querying and rank-bm25 comparisons agree.
    """
    if isinstance(texts, str):
        texts = [texts]
    stop = _stopwords()
    stem = _stemmer().stemWords  # type: ignore[attr-defined]
    return [stem([w for w in TOKEN_PATTERN.findall(t.lower()) if w not in stop]) for t in texts]


class BM25Index:
    """A bm25s index plus the document ids of its rows (row i is ids[i])."""

    def __init__(self, ids: Sequence[str], retriever: object | None, params: dict[str, float | str]) -> None:
        self.ids = list(ids)
        self._retriever = retriever  # None for an empty corpus
        self.params = params
        self._vocab: dict[str, int] = dict(getattr(retriever, "vocab_dict", {}) or {})

    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        texts: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        idf_method: str | None = None,
    ) -> BM25Index:
        """Index `texts` (title + text), row i answering to `ids[i]`.

        `method` / `idf_method` are bm25s's ("lucene" for the product; "atire" + "robertson"
        reproduces rank-bm25's BM25Okapi scores, which the parity tests use). Raises InputError when
        ids and texts differ in length or ids repeat.
        """
        if len(ids) != len(texts):
            raise InputError(f"{len(ids)} ids for {len(texts)} texts")
        if len(set(ids)) != len(ids):
            raise InputError("document ids repeat; BM25 rows must be unique")
        params: dict[str, float | str] = {"k1": k1, "b": b, "method": method, "idf_method": idf_method or method}
        if not ids:
            return cls([], None, params)
        retriever = _bm25s().BM25(k1=k1, b=b, method=method, idf_method=idf_method)
        with np.errstate(divide="ignore", invalid="ignore"):  # a corpus with no indexable token: 0 / 0 lengths
            retriever.index(tokenize(texts), show_progress=False)
        return cls(ids, retriever, params)

    def __len__(self) -> int:
        return len(self.ids)

    def scores(self, query: str) -> NDArray[np.float32]:
        """The BM25 score of every row for `query` (zeros where no query term occurs)."""
        if self._retriever is None:
            return np.zeros(0, dtype=np.float32)
        token_ids = [self._vocab[t] for t in tokenize(query)[0] if t in self._vocab]
        if not token_ids:
            return np.zeros(len(self.ids), dtype=np.float32)
        return self._retriever.get_scores_from_ids(token_ids)

    def search(self, query: str, k: int, mask: np.ndarray | None = None) -> ScoredIds:
        """The top `k` rows containing a query term, best first (ties by row order).

        `mask` is a boolean array over rows (True = may be returned), used for domain filters.
        """
        if k <= 0 or not self.ids:
            return []
        scores = self.scores(query)
        keep = scores > 0
        if mask is not None:
            if mask.shape != scores.shape:
                raise InputError(f"mask has {mask.shape[0]} rows, the index {len(self.ids)}")
            keep &= mask.astype(bool)
        rows = np.flatnonzero(keep)
        if rows.size > k:
            rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
        rows = rows[np.lexsort((rows, -scores[rows]))]
        return [(self.ids[i], float(scores[i])) for i in rows]

    def save(self, directory: str | Path) -> None:
        """Write the index (bm25s's files + our ids and parameters) to `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._retriever is not None:
            self._retriever.save(str(directory), show_progress=False)
        (directory / IDS_FILE).write_text(json.dumps(self.ids), encoding="utf-8")
        (directory / PARAMS_FILE).write_text(json.dumps(self.params), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> BM25Index:
        """Read an index written by `save`. Raises InputError when the folder is not one."""
        directory = Path(directory)
        try:
            ids = json.loads((directory / IDS_FILE).read_text(encoding="utf-8"))
            params = json.loads((directory / PARAMS_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"not a BM25 index folder: {e}", path=directory) from e
        if not ids:
            return cls([], None, params)
        retriever = _bm25s().BM25.load(str(directory), show_progress=False)
        return cls(ids, retriever, params)
