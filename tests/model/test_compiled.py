"""The compiled passage encoder (model/compiled.py): when it compiles, that it encodes as the eager one does,
prefixes included, and that a compilation that fails leaves eager encoding in place. Real torch.compile
runs (about 20 s each); bench/reports/precision.md measures its speed and NDCG on whole test sets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from ddr_search.model import compiled as compiled_module
from ddr_search.model import precision
from ddr_search.model.compiled import COMPILE_AFTER, CompiledPassages
from ddr_search.model.precision import PassageCompile

DEMO = Path(__file__).resolve().parents[2] / "ddr_search" / "demo"


def demo_passages(count: int) -> list[str]:
    from ddr_search.types import passage_text

    lines = (DEMO / "medquad.jsonl").read_text().splitlines()[:count]
    return [passage_text(d["title"], d["text"]) for d in map(json.loads, lines)]


def test_auto_compiles_only_once_enough_passages_are_known_and_never_for_one_row():
    passages = CompiledPassages(torch.nn.Linear(2, 2), PassageCompile.AUTO)
    passages.expect(COMPILE_AFTER - 64)
    assert passages.backbone_for(64) is None  # not worth compiling yet: eager
    passages.expect(64)  # a later call takes the process past the threshold
    assert passages.backbone_for(1) is None  # one row would specialise a second graph: eager
    assert passages.backbone_for(64) is not None
    assert passages.backbone_for(64) is passages.backbone_for(32)  # compiled once, then reused

    one_large_call = CompiledPassages(torch.nn.Linear(2, 2), PassageCompile.AUTO)
    one_large_call.expect(COMPILE_AFTER)
    assert one_large_call.backbone_for(32) is not None  # compiled from its first batch

    assert CompiledPassages(torch.nn.Linear(2, 2), "on").backbone_for(2) is not None
    off = CompiledPassages(torch.nn.Linear(2, 2), "off")
    off.expect(10 * COMPILE_AFTER)
    assert off.backbone_for(64) is None


def test_an_announced_workload_compiles_from_the_first_batch():
    passages = CompiledPassages(torch.nn.Linear(2, 2), PassageCompile.AUTO)
    passages.expect(64)
    assert passages.backbone_for(64) is None
    precision.announce_passages(COMPILE_AFTER)  # an ingest of that many documents starts
    assert passages.backbone_for(64) is not None


def test_a_large_in_process_ingest_announces_what_it_will_encode(tmp_path, monkeypatch):
    """Only what is left to encode counts: a re-run after a crash, or an update of a few documents, of a
    large file must not compile the encoder (about 20 s) for the few passages it encodes."""
    from ddr_search.client import DDRSearch
    from ddr_search.settings import Settings
    from tests.doubles import HashingEncoder

    def write(texts: dict[str, str]) -> Path:
        corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in texts.items()))
        return corpus

    corpus = tmp_path / "corpus.jsonl"
    texts = {f"d{i}": f"document {i}" for i in range(70)}
    monkeypatch.setattr(precision, "COMPILE_AFTER", 50)
    with DDRSearch(Settings(home=tmp_path / "home"), encoder=HashingEncoder()) as client:
        client.ingest(write(dict(list(texts.items())[:40])))  # below the threshold: nothing to announce
        assert precision.announced_passages() == 0
        client.ingest(write(texts))  # 40 stored already, 30 to encode
        assert precision.announced_passages() == 30
        texts |= {"d0": "changed", "d1": "changed", "d70": "new"}
        report = client.ingest(write(texts))
    assert (report.written, report.unchanged) == (3, 68)
    assert precision.announced_passages() == 30 + 3


def test_settings_choose_the_factory_encoders_compilation(monkeypatch, tmp_path):
    from ddr_search.factory import build_encoder
    from ddr_search.settings import Settings

    monkeypatch.setenv("DDR_PASSAGE_COMPILE", "off")
    assert build_encoder(Settings(home=tmp_path)).compiled.choice is PassageCompile.OFF


@pytest.mark.slow
def test_compiled_passages_match_eager_with_and_without_a_general_prefix(fresh_backbone):
    """The no-op general module (the shipped case: the plain backbone) and an active one (prefix attention,
    its keys passed to the compiled graph at each call): compiled vectors are the eager ones to bf16/fp32
    rounding, and a changed general module is seen by the compiled graph (it holds no copy of it). The model
    has query adapters, as the shipped store does: passages run through their wrappers, never their tensors."""
    from ddr_search.model.adapters import DEFAULT_ADAPTER_RANK
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.encoder import TorchEncoder

    texts = demo_passages(48)
    backbone = fresh_backbone
    model = DDRModel(backbone, adapter_rank=DEFAULT_ADAPTER_RANK)
    model.add_general()
    eager = TorchEncoder(model, backbone.tokenizer, passage_compile="off")
    fast = TorchEncoder(model, backbone.tokenizer, passage_compile="on")

    expected, got = eager.encode_passages(texts), fast.encode_passages(texts)
    assert fast.compiled.active
    assert (expected * got).sum(axis=1).min() > 0.9999

    with torch.no_grad():
        model.general.gates.fill_(0.5)  # an active general module: passages now go through the prefixes
    active_expected, active_got = eager.encode_passages(texts), fast.encode_passages(texts)
    assert fast.compiled.active
    assert (active_expected * active_got).sum(axis=1).min() > 0.9999
    assert (expected * active_got).sum(axis=1).min() < 0.999  # the prefixes really changed the compiled output


@pytest.mark.slow
def test_a_failed_compilation_warns_once_and_encodes_eagerly(fresh_backbone, monkeypatch, caplog):
    """No C++ compiler (a path that does not exist, with inductor's on-disk cache off so nothing is reused):
    one warning, and the same vectors as the eager encoder for this and every later call."""
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.encoder import TorchEncoder

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/g++",))
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)
    texts = demo_passages(8)
    backbone = fresh_backbone
    model = DDRModel(backbone)
    eager = TorchEncoder(model, backbone.tokenizer, passage_compile="off")
    fast = TorchEncoder(model, backbone.tokenizer, passage_compile="on")

    with caplog.at_level(logging.WARNING, logger=compiled_module.__name__):
        got = [fast.encode_passages(texts) for _ in range(2)]
    warnings = [r for r in caplog.records if "compiling the passage encoder failed" in r.getMessage()]
    assert len(warnings) == 1
    assert not fast.compiled.active
    expected = eager.encode_passages(texts)
    for vectors in got:
        np.testing.assert_array_equal(vectors, expected)


@pytest.mark.parametrize("rows", [0, 1])
def test_tiny_batches_never_compile(rows):
    assert CompiledPassages(torch.nn.Linear(2, 2), "on").wants_compiled(rows) is False
