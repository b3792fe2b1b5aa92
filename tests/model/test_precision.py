"""bf16 passage encoding: chosen where the CPU has AMX, and ranking as fp32 does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ddr_search.model import precision
from ddr_search.model.precision import PassagePrecision, resolve_passage_precision

DEMO = Path(__file__).resolve().parents[2] / "ddr_search" / "demo"


@pytest.mark.parametrize(("amx", "expected"), [(True, PassagePrecision.BF16), (False, PassagePrecision.FP32)])
def test_auto_is_bf16_only_on_amx(monkeypatch, amx, expected):
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
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
