"""MixedEncoder: queries from one encoder, passages from another of the same version.

Why: each side has its own fastest engine. On CPUs with native bf16 torch's bf16 passages run faster than
the export's fp32 passage graph (on AMX about twice the int8 one's passages/s) and keep fp32's ranking
(bench/reports/precision.md), while single queries are fastest through ONNX Runtime. With an export
present the factory therefore pairs the export's query path with torch's passages. The torch side loads
on the first passage batch, so a process that only searches never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ddr_search.encoding import EncoderWrapper
from ddr_search.errors import ExportError
from ddr_search.types import Encoder, Vectors


class MixedEncoder(EncoderWrapper):
    """Implements `Encoder`: `queries` answers everything but `encode_passages`, which `make_passages()`
    (called once, on first use) answers. Both must embed passages as the same encoder version."""

    def __init__(self, queries: Encoder, make_passages: Callable[[], Encoder]) -> None:
        super().__init__(queries)
        self._make_passages = make_passages
        self._passages: Encoder | None = None

    @property
    def queries(self) -> Encoder:
        return self.inner

    @property
    def passages(self) -> Encoder:
        """The passage encoder, built on first use and checked to embed as the query side's version."""
        if self._passages is None:
            passages = self._make_passages()
            if passages.version != self.inner.version:
                raise ExportError(
                    f"the passage encoder is version {passages.version}, the query encoder {self.inner.version}:"
                    " re-run `ddr-search export` for the module store in use"
                )
            self._passages = passages
        return self._passages

    def encode_passages(self, texts: Sequence[str], *, batch_size: int = 32) -> Vectors:
        return self.passages.encode_passages(texts, batch_size=batch_size)
