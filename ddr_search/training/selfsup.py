"""Self-supervised pairs from a raw corpus, so a domain module can be learned with no labelled queries.

Three pseudo-query kinds per document (docs/architecture.md sections 4-5): its title -> its body, one of its sentences
-> the rest of the passage, and a random crop of words -> the passage. Every positive carries the
document id, so training against cached corpus embeddings scores the whole document (as search will).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ddr_search.model.encoder import passage_text
from ddr_search.training.pairs import Pair, Passage
from ddr_search.types import Document

log = logging.getLogger(__name__)
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


@dataclass(frozen=True)
class LabelFreeBudget:
    """What bounds a label-free module's training time, whatever the corpus size (bench/labelfree.py).

    `examples`: pseudo-query encodings trained through, over all epochs (about 940 steps of 32, five
    minutes on two cores; on SciFact a third of that gained 0.8 nDCG@10 points where this gains 1.1).
    `dev_pairs`: held-out pseudo pairs for early stopping, from documents no training pair comes from.
    `passage_tokens`: the corpus is encoded to this length for training only (a document's lead; half
    the encoding time of 256 tokens). `query_tokens`: pseudo-queries are cut to this length (sentences
    run long, real queries do not): the same SciFact gain as 64 tokens at 70% of the step time.
    `lr` (unless the domain rate is set) and `evaluations` (dev checks over the run): at 5e-3 with one
    check per epoch MedQuAD dev gained 0.8 points, at 2.5e-3 checked four times 1.2 (SciFact 1.1 both).
    `seconds`: wall clock for the whole call, or None (the default: no limit). Where it binds, at most
    `encoding_share` of it encodes a seeded sample of the corpus (`documents_within`), training stops at
    the steps that fit, and `closing_seconds` are left for the routing profile and the save. Off by
    default because what fits is not worth having on a slow CPU: on an AVX2-only EPYC, 540 s trained on
    4,250 of 10,000 MedQuAD documents for 124 steps and gained nothing on dev, where the unlimited run
    (25 minutes there, bench/reports/labelfree_avx2.md) gains 1.4 points (docs/training.md).
    """

    examples: int = 30_000
    dev_pairs: int = 500
    passage_tokens: int = 128
    query_tokens: int = 32
    lr: float = 2.5e-3
    evaluations: int = 4
    seconds: float | None = None
    encoding_share: float = 0.4
    closing_seconds: float = 30.0

    def steps(self, examples_per_step: int) -> int:
        return -(-self.examples // examples_per_step)


def documents_within(
    docs: Sequence[Document],
    encode: Callable[[list[str]], object],
    seconds: float,
    *,
    seed: int = 0,
    probe: int = 64,
    granularity: int = 250,
) -> list[Document]:
    """The documents whose encoding fits in `seconds`: all of them, or a seeded sample whose size is set
    by timing `encode` on `probe` of them (rounded down to `granularity`, so a rerun on the same machine
    usually picks the same sample and finds its embeddings cached)."""
    order = list(docs)
    random.Random(seed).shuffle(order)
    sample = order[:probe]
    started = time.perf_counter()
    encode([passage_text(d.title, d.text) for d in sample])
    per_doc = (time.perf_counter() - started) / max(1, len(sample))
    fits = int((seconds - per_doc * len(sample)) / per_doc) if per_doc > 0 else len(order)
    if fits >= len(order):
        return list(docs)
    keep = max(min(len(order), granularity), fits // granularity * granularity)
    log.warning(
        "time budget: training on %d of %d documents (%.1f documents/s encoded)",
        keep,
        len(order),
        1 / per_doc,
    )
    return order[:keep]


def label_free_pairs(
    docs: Sequence[Document], domain: str, budget: LabelFreeBudget, *, dev_fraction: float, seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """(train, dev) pseudo pairs: documents shuffled (seeded), the first ones' pairs held out for dev
    (at most `dev_fraction` of the pairs and `budget.dev_pairs`)."""
    pairs = pairs_from_corpus(docs, domain=domain, seed=seed)
    dev_size = min(budget.dev_pairs, round(len(pairs) * dev_fraction))
    by_doc: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_doc.setdefault(pair.positives[0].id or "", []).append(pair)
    order = sorted(by_doc)
    random.Random(seed).shuffle(order)
    dev: list[Pair] = []
    train: list[Pair] = []
    for doc_id in order:
        (dev if len(dev) < dev_size and doc_id != order[-1] else train).extend(by_doc[doc_id])
    if len(train) > budget.examples:
        train = random.Random(seed).sample(train, budget.examples)
    return train, dev


LABEL_FREE_BUDGET = LabelFreeBudget()
