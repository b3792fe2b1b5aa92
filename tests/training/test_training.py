"""Training smoke tests on real text: loss goes down, adding a domain changes nothing else, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ddr_search.cli.main import cli
from ddr_search.model.backbone import load_backbone
from ddr_search.model.ddr import DDRModel
from ddr_search.model.encoder import TorchEncoder, passage_text
from ddr_search.model.store import load_store, save_store
from ddr_search.routing import recalibrate
from ddr_search.training.api import module_groups, train_domain, train_general
from ddr_search.training.config import TrainConfig
from ddr_search.training.corpus import read_corpus
from ddr_search.training.dr import train_dr
from ddr_search.training.loop import train
from ddr_search.training.pairs import Pair, Passage
from ddr_search.types import Document
from tests.training.sci_task import sci_task

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Two threads on a loaded 2-core box spend more time waiting on each other than computing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def docs(shared_data) -> list[Document]:
    """24 real SciFact abstracts, cut to 40 words so encoding them stays fast."""
    full = read_corpus(shared_data / "beir" / "scifact" / "corpus.jsonl")[:24]
    return [Document(d.id, title=d.title, text=" ".join(d.text.split()[:40])) for d in full]


def _config(tmp_path, **overrides) -> TrainConfig:
    config = TrainConfig(
        batch_size=8,
        epochs=1,
        dev_fraction=0.2,
        max_query_length=32,
        max_passage_length=64,
        show_progress=False,
        eval_every=2,
        patience=10,
    )
    config.lr["domain"] = 5e-2
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def test_a_few_steps_reduce_the_loss(fresh_backbone, docs, tmp_path):
    config = _config(tmp_path, max_steps=5, temperature=0.02)
    _, task = sci_task(fresh_backbone, docs, config)
    probe = list(range(24))
    with torch.no_grad():
        before = float(task.loss(probe))
    config.min_delta = -1.0  # keep the last step, whatever dev says: this test is about the loss
    train(task, config)
    with torch.no_grad():
        after = float(task.loss(probe))
    assert after < 0.9 * before, (before, after)


def test_encoding_by_length_gives_the_vectors_of_one_padded_batch(fresh_backbone, docs, tmp_path):
    _, task = sci_task(fresh_backbone, docs, _config(tmp_path))
    examples = task.train_examples[:9]
    lengths = task._tokens([e.query for e in examples])["attention_mask"].sum(dim=1)
    assert lengths.min() < lengths.max()  # the halves really pad to different lengths
    with torch.no_grad():
        whole, _ = task.encode(examples)
        halves, _ = task.encode_by_length(examples)
    torch.testing.assert_close(halves, whole, atol=1e-5, rtol=0)


def test_resume_continues_exactly(fresh_backbone, docs, tmp_path):
    straight = _config(tmp_path, max_steps=4, min_delta=-1.0)
    _, task = sci_task(fresh_backbone, docs, straight)
    result = train(task, straight)
    expected = {k: v.clone() for k, v in task.trainable_state().items()}

    first = _config(tmp_path, max_steps=2, min_delta=-1.0, checkpoint_dir=tmp_path / "ckpt")
    model, task = sci_task(load_backbone(), docs, first)
    train(task, first)
    with torch.no_grad():  # wreck the live weights: resume must restore them from the checkpoint
        for p in model.domain_modules["sci"].parameters():
            p.add_(1.0)
    second = _config(tmp_path, max_steps=4, min_delta=-1.0, checkpoint_dir=tmp_path / "ckpt", resume=True)
    resumed = train(task, second)
    assert resumed.steps == 4 and [h["step"] for h in resumed.history] == [h["step"] for h in result.history]
    for key, value in task.trainable_state().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key


def test_adding_a_domain_leaves_everything_else_bit_identical(fresh_backbone, docs, tmp_path):
    model = DDRModel(fresh_backbone, prefix_length=4, adapter_rank=2)
    model.add_general()
    model.add_domain_module("old")
    with torch.no_grad():  # make the existing modules non-trivial
        torch.manual_seed(0)
        model.general.gates.uniform_(0.1, 0.5)
        model.domain_modules["old"].keys.normal_(0, 0.5)
        model.domain_modules["old"].gates.fill_(0.3)
        model.domain_modules["old"].adapter_b["0_query"].normal_(0, 0.05)
        model.router.weight.normal_(0, 0.1)
    store, out = tmp_path / "store", tmp_path / "out"
    manifest = save_store(model, store)
    config = _config(tmp_path, max_steps=3, min_delta=-1.0, routing_quantile=0.2)
    _, result = train_domain("new", store, out, config, corpus=docs, cache_dir=tmp_path / "cache")
    after = (out / "manifest.json").read_text()
    assert "new" in after and result.steps == 3
    from ddr_search.manifest import read_manifest

    new_manifest = read_manifest(out)
    for name in ("general", "old"):
        assert new_manifest.modules[name].sha256 == manifest.modules[name].sha256
        assert (out / "modules" / f"{name}.safetensors").read_bytes() == (
            store / "modules" / f"{name}.safetensors"
        ).read_bytes()
    assert new_manifest.modules["new"].notes["label_free"] == 1
    assert new_manifest.adapter_rank == 2
    assert new_manifest.modules["new"].fusion is None  # tuned on pseudo-queries it would favour BM25
    reloaded = load_store(out, load_backbone())
    assert torch.equal(reloaded.router.weight[0], model.router.weight[0])
    assert new_manifest.modules["new"].version == 1
    profile = reloaded.profiles["new"]  # its threshold sits at the quantile the config asked for
    assert new_manifest.modules["new"].routing["quantile"] == profile.quantile == 0.2
    assert recalibrate(profile, 0.2).threshold == profile.threshold
    new = reloaded.domain_modules["new"]  # label-free: its prefix trained, its adapters stayed the no-op
    assert new.gates.abs().sum() > 0 and all(not b.any() for b in new.adapter_b.values())
    texts = [passage_text(d.title, d.text) for d in docs[:4]]
    old_encoder = TorchEncoder(load_store(store, load_backbone()), fresh_backbone.tokenizer, max_passage_length=64)
    new_encoder = TorchEncoder(reloaded, fresh_backbone.tokenizer, max_passage_length=64)
    assert old_encoder.version == new_encoder.version
    assert np.array_equal(old_encoder.encode_passages(texts), new_encoder.encode_passages(texts))


def test_train_domain_command_keeps_a_label_free_module_to_its_time_budget(fresh_backbone, docs, tmp_path):
    """`--time-budget` too short for training: one step, the notes say it was time-limited, nothing else moves."""
    model = DDRModel(fresh_backbone, prefix_length=4)
    model.add_general()
    store, out, corpus = tmp_path / "store", tmp_path / "out", tmp_path / "corpus.jsonl"
    save_store(model, store)
    corpus.write_text("".join(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs))
    args = ["train", "domain", "legal", "--corpus", str(corpus), "--store", str(store), "--out", str(out)]
    args += ["--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, [*args, "--time-budget", "1", "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from ddr_search.manifest import read_manifest

    notes = read_manifest(out).modules["legal"].notes
    assert notes["time_limited"] == 1 and notes["steps"] == 1 and notes["corpus_documents"] == len(docs)
    refused = CliRunner().invoke(cli, [*args, "--time-budget", "0"])
    assert refused.exit_code == 2 and "--time-budget" in refused.output


def test_labelled_modules_train_prefix_and_adapters_label_free_ones_the_prefix(fresh_backbone):
    model = DDRModel(fresh_backbone, prefix_length=4, adapter_rank=2)
    module = model.add_domain_module("legal")
    config = TrainConfig()
    labelled = module_groups(model, "legal", config)
    assert [(g["name"], g["lr"]) for g in labelled] == [("domain:legal", 5e-3), ("adapter:legal", 5e-4)]
    assert {id(p) for g in labelled for p in g["params"]} == {id(p) for p in module.parameters()}
    label_free = module_groups(model, "legal", config, adapters=False)
    assert [g["name"] for g in label_free] == ["domain:legal"]
    assert all(p.requires_grad for p in module.prefix_parameters())


def test_general_phase_and_dr_baseline_run(docs, tmp_path):
    pairs = [
        Pair(d.title, (Passage(d.text, d.id),), (Passage(docs[(i + 1) % len(docs)].text),), None, d.id)
        for i, d in enumerate(docs[:24])
    ]
    config = _config(tmp_path, max_steps=2, min_delta=-1.0)
    model, result = train_general(pairs, tmp_path / "store", config, prefix_length=4)
    assert result.steps == 2 and (tmp_path / "store" / "modules" / "general.safetensors").exists()
    assert float(model.general.gates.abs().sum()) > 0  # it moved off the no-op
    config = _config(tmp_path, max_steps=1, min_delta=-1.0)
    _, result = train_dr(pairs, tmp_path / "dr", config)
    tuned = load_backbone(tmp_path / "dr")
    assert tuned.info.fingerprint != load_backbone().info.fingerprint
