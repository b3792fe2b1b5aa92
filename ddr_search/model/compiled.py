"""The passage backbone compiled by torch.compile (inductor), for processes that encode many passages.

Eager torch runs every operation of the encoder as its own kernel: after bf16 moved the matmuls onto AMX,
the work around them (bias adds, GELU, casts, layer norms) took most of the time. Inductor fuses that work
into the matmuls and, with frozen weights, packs them once for oneDNN; bench/reports/precision.md measures
the passages/s and the ranking. Compiling costs about 20 s per process (dynamo tracing plus a C++ build),
so `auto` compiles only once a process is known to encode `COMPILE_AFTER` passages (those encoded plus the
current call's, or what an in-process ingest announced: precision.announce_passages): a long ingest, an
evaluation of a large corpus or a worker that lives through many batches pays it back, a one-off small
ingest never pays it.

Shapes are dynamic (batch and length vary with every sorted batch): one compilation serves them all.
A batch of one passage runs eagerly, since size 1 would specialise a second compilation.
"""

from __future__ import annotations

import logging
import threading

import torch
from torch import nn

from ddr_search.model.precision import COMPILE_AFTER, PassageCompile, announced_passages

log = logging.getLogger(__name__)


class CompiledPassages:
    """Decides per batch which backbone encodes it: the compiled one once earned, else the eager one.

    A compilation that fails (no C++ compiler, an unsupported op) is logged once and the encoder stays
    eager for good: the vectors are the same, only slower."""

    def __init__(self, backbone: nn.Module, choice: PassageCompile | str = PassageCompile.AUTO) -> None:
        self.backbone = backbone
        self.choice = PassageCompile(choice)
        self.passages = 0  # encoded by this encoder, plus the current call's
        self._compiled: nn.Module | None = None
        self._failed = False
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether the compiled backbone is serving batches now."""
        return self._compiled is not None and not self._failed

    def expect(self, passages: int) -> None:
        """Counts a call's passages before its first batch, so one call of 10k passages compiles at once."""
        self.passages += passages

    def wants_compiled(self, rows: int) -> bool:
        if self.choice is PassageCompile.OFF or self._failed or rows < 2:
            return False
        return self.choice is PassageCompile.ON or max(self.passages, announced_passages()) >= COMPILE_AFTER

    def backbone_for(self, rows: int) -> nn.Module | None:
        """The backbone for a batch of `rows` passages: the compiled one, or None for the model's own."""
        if not self.wants_compiled(rows):
            return None
        with self._lock:
            if self._compiled is None:
                log.info("compiling the passage encoder (torch.compile, about 20 s): later batches run faster")
                self._compiled = _FrozenCompiled(self.backbone)
        return self._compiled

    def failed(self, error: Exception) -> None:
        """The compiled backbone raised: warn once and encode eagerly from now on."""
        self._failed = True
        log.warning(
            "compiling the passage encoder failed (%s: %s); encoding passages eagerly (same vectors, slower). "
            "Set DDR_PASSAGE_COMPILE=off to skip the attempt.",
            type(error).__name__,
            str(error).splitlines()[0] if str(error) else "",
        )


class _FrozenCompiled(nn.Module):
    """torch.compile of the backbone with inductor's freezing (weights folded as constants and packed for
    oneDNN), which is most of the gain; the backbone is frozen, so its weights never change under it."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.compiled = torch.compile(backbone, dynamic=True)

    def forward(self, **inputs: torch.Tensor) -> object:
        # freezing is read when a graph compiles (first call, and any recompilation), so patch every call
        with torch._inductor.config.patch(freezing=True):
            return self.compiled(**inputs)
