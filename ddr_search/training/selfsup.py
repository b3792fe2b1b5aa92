"""Self-supervised pairs from a raw corpus, so a domain module can be learned with no labelled queries.

Three pseudo-query kinds per document (docs/architecture.md sections 4-5): its title -> its body, one of its sentences
-> the rest of the passage, and a random crop of words -> the passage. Every positive carries the
document id, so training against cached corpus embeddings scores the whole document (as search will).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from enum import StrEnum

from ddr_search.training.pairs import Pair, Passage
from ddr_search.types import Document

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


class PseudoQuery(StrEnum):
    TITLE = "title"
    SENTENCE = "sentence"
    CROP = "crop"


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _title_pair(doc: Document, domain: str | None) -> Pair | None:
    if len(doc.title.split()) < 3 or len(doc.text.split()) < 8:
        return None
    return Pair(doc.title, (Passage(doc.text, doc.id),), (), domain, f"{doc.id}:title")


def _sentence_pair(doc: Document, rng: random.Random, domain: str | None) -> Pair | None:
    parts = sentences(doc.text)
    candidates = [i for i, s in enumerate(parts) if 6 <= len(s.split()) <= 60]
    if len(parts) < 3 or not candidates:
        return None
    i = rng.choice(candidates)
    rest = " ".join(parts[:i] + parts[i + 1 :])
    return Pair(parts[i], (Passage(rest, doc.id, doc.title),), (), domain, f"{doc.id}:sentence")


def _crop_pair(doc: Document, rng: random.Random, domain: str | None, min_words: int, max_words: int) -> Pair | None:
    words = doc.text.split()
    if len(words) < 2 * min_words:
        return None
    length = rng.randint(min_words, min(max_words, len(words) // 2))
    start = rng.randint(0, len(words) - length)
    crop = " ".join(words[start : start + length])
    return Pair(crop, (Passage(doc.text, doc.id, doc.title),), (), domain, f"{doc.id}:crop")


def pairs_from_corpus(
    docs: Sequence[Document],
    *,
    kinds: Sequence[PseudoQuery] = (PseudoQuery.TITLE, PseudoQuery.SENTENCE, PseudoQuery.CROP),
    domain: str | None = None,
    seed: int = 0,
    crop_words: tuple[int, int] = (5, 16),
) -> list[Pair]:
    """At most one pair of each kind per document; documents too short for a kind are skipped."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for doc in docs:
        for kind in kinds:
            if kind is PseudoQuery.TITLE:
                pair = _title_pair(doc, domain)
            elif kind is PseudoQuery.SENTENCE:
                pair = _sentence_pair(doc, rng, domain)
            else:
                pair = _crop_pair(doc, rng, domain, *crop_words)
            if pair is not None:
                pairs.append(pair)
    return pairs
