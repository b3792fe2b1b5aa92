"""The keep loss (docs/training.md): a module trained with queries of other domains leaves them where the
general module puts them, so a foreign query routing lets through costs little; and its inputs are checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ddr_search.cli.main import cli
from ddr_search.data.beir import read_queries
from ddr_search.errors import InputError
from ddr_search.model.backbone import load_backbone
from ddr_search.model.ddr import DDRModel
from ddr_search.model.encoder import TorchEncoder
from ddr_search.model.store import save_store
from ddr_search.training.api import train_domain
from ddr_search.training.config import TrainConfig
from ddr_search.training.corpus import read_corpus
from ddr_search.training.loop import train
from ddr_search.training.pairs import read_query_texts
from ddr_search.types import Document, RoutingMode
from tests.training.sci_task import sci_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def docs(shared_data) -> list[Document]:
    """24 real SciFact abstracts, cut to 40 words so encoding them stays fast."""
    full = read_corpus(shared_data / "beir" / "scifact" / "corpus.jsonl")[:24]
    return [Document(d.id, title=d.title, text=" ".join(d.text.split()[:40])) for d in full]


@pytest.fixture(scope="module")
def foreign(shared_data) -> list[str]:
    """16 real NFCorpus questions: another domain's queries for a module trained on SciFact text."""
    return list(read_queries(shared_data / "beir" / "nfcorpus" / "queries.jsonl").values())[:16]


def _foreign_shift(backbone, docs: list[Document], foreign: list[str], keep_weight: float) -> float:
    """Train a fresh module on SciFact pseudo-queries for 6 steps; the mean cosine distance between the
    foreign queries encoded through it and through the general module alone."""
    torch.manual_seed(0)
    config = TrainConfig(batch_size=8, epochs=1, max_query_length=32, show_progress=False, max_steps=6)
    config.min_delta, config.keep_weight, config.keep_batch = -1.0, keep_weight, 8
    config.lr["domain"] = 5e-2
    model, task = sci_task(backbone, docs, config, keep=foreign)
    train(task, config)
    encoder = TorchEncoder(model, backbone.tokenizer, max_query_length=32)
    through_module = encoder.encode_queries(foreign, domain="sci").vectors
    general = encoder.encode_queries(foreign, routing=RoutingMode.NONE).vectors
    if task.keep is not None:  # the targets are the general module's vectors
        np.testing.assert_allclose(general, task.keep.vectors, atol=1e-5)
    return float(np.mean(1 - np.sum(through_module * general, axis=1)))


def test_the_keep_loss_holds_foreign_queries_where_the_general_module_puts_them(fresh_backbone, docs, foreign):
    without = _foreign_shift(fresh_backbone, docs, foreign, keep_weight=0.0)
    kept = _foreign_shift(load_backbone(), docs, foreign, keep_weight=10.0)
    assert without > 1e-3, without  # the module does move foreign queries when nothing holds them
    assert kept < 0.5 * without, (kept, without)


def test_a_keep_weight_needs_keep_queries_and_writes_nothing(fresh_backbone, docs, tmp_path):
    model = DDRModel(fresh_backbone, prefix_length=4)
    model.add_general()
    save_store(model, tmp_path / "store")
    config = TrainConfig(keep_weight=10.0, show_progress=False)
    with pytest.raises(InputError, match="needs keep queries"):
        train_domain("new", tmp_path / "store", tmp_path / "out", config, corpus=docs)
    assert not (tmp_path / "out").exists()


def test_keep_queries_are_read_from_pairs_beir_queries_or_lines(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "is coffee bad for you", "positives": [{"text": "x"}]}) + "\n")
    beir = tmp_path / "queries.jsonl"
    beir.write_text(json.dumps({"_id": "1", "text": "statute of limitations for fraud"}) + "\n\n")
    lines = tmp_path / "queries.txt"
    lines.write_text("first question\n\n  second question  \n")
    assert read_query_texts(pairs) == ["is coffee bad for you"]
    assert read_query_texts(beir) == ["statute of limitations for fraud"]
    assert read_query_texts(lines) == ["first question", "second question"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "fine"}) + "\n" + json.dumps({"title": "no query"}) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:2: field 'query'"):
        read_query_texts(bad)


def test_train_domain_command_names_a_bad_keep_queries_line(tmp_path):
    pairs, keep = tmp_path / "pairs.jsonl", tmp_path / "keep.jsonl"
    pairs.write_text(json.dumps({"query": "q", "positives": [{"text": "p"}]}) + "\n")
    keep.write_text(json.dumps({"query": ""}) + "\n")
    args = ["train", "domain", "legal", "--pairs", str(pairs), "--keep-queries", str(keep)]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "keep.jsonl:1" in result.stderr, result.output
    assert not (tmp_path / "out").exists()
