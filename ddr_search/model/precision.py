"""Which arithmetic the torch passage encoder runs in, and whether it runs compiled (the choice and the
workload it weighs live here, torch-free; the compiling itself in model/compiled.py).

Passage encoding is the product's bulk work (ingest, re-embedding, evaluation and training caches). On CPUs
that compute bf16 natively (AMX tiles, or AVX-512 BF16 dot products as on AMD Zen 4 and later), bf16 matmuls
run several times faster than fp32 ones, and the passage vectors keep the fp32 ranking:
bench/reports/precision.md measures dense NDCG@10 within 0.002 of fp32 (the parity bound for a passage path)
at about 2.5-4x fp32's passages/s. Elsewhere bf16 is emulated and slower, so `auto` stays on fp32 there.
Queries always run in fp32: one query costs little, and routing thresholds were calibrated in it.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from pathlib import Path


class PassagePrecision(StrEnum):
    AUTO = "auto"  # bf16 where the CPU computes it natively (AMX or AVX-512 BF16), else fp32
    FP32 = "fp32"
    BF16 = "bf16"  # torch.autocast: bf16 matmuls and attention, fp32 weights, layer norms and pooling


class PassageCompile(StrEnum):
    """Whether the torch passage encoder runs compiled (model/compiled.py); named here, torch-free, so that
    settings can hold it without importing torch."""

    AUTO = "auto"  # compile once the encoder is known to encode COMPILE_AFTER passages (model/compiled.py)
    ON = "on"  # compile before the first batch
    OFF = "off"  # always eager


COMPILE_AFTER = 8192  # passages: ~17-21 s of compiling is repaid after about 6,000 at the measured 1.36x

_announced_passages = 0


def announce_passages(count: int) -> None:
    """Tells this process's torch passage encoders that `count` more passages are coming (an in-process
    ingest that knows how many it will encode), so that one compiles at its first batch when the whole job
    repays it instead of after COMPILE_AFTER passages. Process-wide, as the compile cost is; torch-free, so
    ingest can call it before anything loads."""
    global _announced_passages
    _announced_passages += count


def announced_passages() -> int:
    return _announced_passages


NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@cache
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on CPUs whose oneDNN bf16 matmuls run natively: AMX bf16 tiles (Intel Sapphire Rapids and later)
    or AVX-512 BF16 dot products (AMD Zen 4 and later, Intel Cooper Lake). Without either, bf16 is emulated.

    Read once per process from the kernel's CPU flags, not torch, so that an ONNX-only process can decide
    without importing torch (every TorchEncoder asks); where there is no /proc/cpuinfo (not Linux) this
    says no, and fp32 serves."""
    try:
        return not NATIVE_BF16_FLAGS.isdisjoint(cpuinfo.read_text().split())
    except OSError:
        return False


def resolve_passage_precision(choice: PassagePrecision | str) -> PassagePrecision:
    """`auto` -> bf16 on CPUs with native bf16, fp32 elsewhere; an explicit choice is kept (bf16 runs
    everywhere, slowly where it is emulated)."""
    choice = PassagePrecision(choice)
    if choice is PassagePrecision.AUTO:
        return PassagePrecision.BF16 if cpu_has_native_bf16() else PassagePrecision.FP32
    return choice
