"""bf16 passage encoding: chosen where the CPU computes bf16 natively, and ranking as fp32 does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ddr_search.model import precision
from ddr_search.model.precision import PassagePrecision, resolve_passage_precision

DEMO = Path(__file__).resolve().parents[2] / "ddr_search" / "demo"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse avx2 avx512f amx_bf16 amx_tile", True),  # Intel Sapphire Rapids
        ("fpu sse avx2 avx512f avx512_bf16 avx512_vnni", True),  # AMD Zen 4 / 5
        ("fpu sse avx2 avx512f avx512_vnni", False),  # Ice Lake, Cascade Lake: bf16 emulated
        ("fpu sse avx2 fma", False),  # AVX2 only
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert precision.cpu_has_native_bf16.__wrapped__(cpuinfo) is expected
    assert precision.cpu_has_native_bf16.__wrapped__(tmp_path / "absent") is False  # not Linux: fp32


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, PassagePrecision.BF16), (False, PassagePrecision.FP32)])
def test_auto_is_bf16_only_where_the_cpu_has_it_natively(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native_bf16)
    assert resolve_passage_precision("auto") is expected
    assert resolve_passage_precision("fp32") is PassagePrecision.FP32  # an explicit choice is kept
    assert resolve_passage_precision("bf16") is PassagePrecision.BF16


def test_settings_choose_the_factory_encoders_precision(monkeypatch, tmp_path):
    from ddr_search.factory import build_encoder
    from ddr_search.settings import Settings

    monkeypatch.setenv("DDR_PASSAGE_PRECISION", "fp32")
    encoder = build_encoder(Settings(home=tmp_path))
    assert encoder.passage_precision is PassagePrecision.FP32


def test_bf16_passages_rank_the_demo_corpus_as_fp32_does(fresh_backbone):
    """The shipped MedQuAD sample (196 answers, each question's own answer known): bf16 vectors stay within
    cosine 0.999 of fp32 and each question's top answer is the fp32 one (bench/reports/precision.md
    measures NDCG on whole test sets)."""
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.types import RoutingMode, passage_text

    docs = [json.loads(line) for line in (DEMO / "medquad.jsonl").read_text().splitlines()]
    questions = [json.loads(line)["question"] for line in (DEMO / "medquad-questions.jsonl").read_text().splitlines()]
    texts = [passage_text(d["title"], d["text"]) for d in docs]
    backbone = fresh_backbone
    model = DDRModel(backbone)
    fp32 = TorchEncoder(model, backbone.tokenizer, passage_precision="fp32")
    bf16 = TorchEncoder(model, backbone.tokenizer, passage_precision="bf16")

    exact, fast = fp32.encode_passages(texts), bf16.encode_passages(texts)
    assert fast.dtype == np.float32
    cosines = (exact * fast).sum(axis=1)
    assert cosines.min() > 0.999
    assert not np.array_equal(exact, fast)  # bf16 really ran

    queries = fp32.encode_queries(questions, routing=RoutingMode.NONE).vectors
    top_exact, top_fast = (queries @ exact.T).argmax(axis=1), (queries @ fast.T).argmax(axis=1)
    assert (top_exact == top_fast).mean() >= 0.98
