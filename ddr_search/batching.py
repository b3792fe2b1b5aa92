"""Cutting work into batches: one home for the two ways every encoder and ingest path does it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

import numpy as np

from ddr_search.errors import InputError

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter), without materialising `items`."""
    if size < 1:
        raise InputError(f"batch size must be >= 1, got {size}")
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def by_length(texts: Sequence[str], size: int) -> list[tuple[np.ndarray, list[str]]]:
    """(row indices, texts) batches, longest texts first: padding, and so wasted attention, stays small.
    The caller writes each batch's results back at its indices, so the input order is kept."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [(order[i : i + size], [texts[j] for j in order[i : i + size]]) for i in range(0, len(texts), size)]
