"""fp32 ONNX graphs and the ORT encoder against the torch model they were exported from (<= 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest

from ddr_search.errors import InputError, UnknownModuleError
from ddr_search.types import Encoder, RoutingMode
from onnx_export.artifacts import (
    ATTENTION_MASK,
    INPUT_IDS,
    MODULE_WEIGHTS,
    Precision,
    Role,
    read_export_manifest,
)

TOLERANCE = 1e-4
# Every batch pads: lengths 1..512 in rows of one batch, and a batch of a single token.
BATCHES = [[512, 300, 17, 1], [1], [2, 1], [129, 128, 64]]


def _batch(lengths: list[int], seed: int):
    """Random real-vocabulary ids wrapped in [CLS] ... [SEP], right-padded like the tokenizer does."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(1996, 29000, (length,), generator=generator)
        ids[row, 0] = 101
        if length > 1:
            ids[row, length - 1] = 102
        mask[row, :length] = 1
    return ids, mask


@pytest.fixture(scope="module")
def sessions(export_dir):
    import onnxruntime

    manifest = read_export_manifest(export_dir)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1

    opened = {}

    def open_graph(role: Role, module: str | None = None, precision: Precision | None = Precision.FP32):
        record = manifest.graph(role, precision, module)
        if record.file not in opened:
            path = str(export_dir / record.file)
            opened[record.file] = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return opened[record.file]

    return open_graph


@pytest.fixture(scope="module")
def model(torch_encoder):
    return torch_encoder.model


def _run(session, ids, mask, **extra):
    return session.run(None, {INPUT_IDS: ids.numpy(), ATTENTION_MASK: mask.numpy(), **extra})


@pytest.mark.parametrize("lengths", BATCHES, ids=lambda b: "x".join(map(str, b)))
def test_passage_encoder_matches_torch(sessions, model, lengths):
    import torch

    ids, mask = _batch(lengths, seed=len(lengths))
    with torch.inference_mode():
        expected = model(ids, mask).numpy()
    (got,) = _run(sessions(Role.PASSAGE), ids, mask)
    assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.parametrize("lengths", [[40, 9, 1]], ids=lambda b: "x".join(map(str, b)))
@pytest.mark.parametrize("module", ["legal", "bio"])
def test_domain_encoder_matches_torch_with_that_module_alone(sessions, model, module, lengths):
    import torch

    ids, mask = _batch(lengths, seed=7)
    one_hot = torch.zeros(len(lengths), len(model.module_names))
    one_hot[:, model.module_names.index(module)] = 1.0
    with torch.inference_mode():
        expected = model(ids, mask, one_hot).numpy()
        passage = model(ids, mask).numpy()
    (got,) = _run(sessions(Role.QUERY_DOMAIN, module), ids, mask)
    assert np.abs(got - expected).max() <= TOLERANCE
    assert np.abs(got - passage).max() > 10 * TOLERANCE  # the domain prefix really is in the graph


@pytest.mark.parametrize("lengths", BATCHES, ids=lambda b: "x".join(map(str, b)))
def test_weighted_encoder_and_router_match_torch(sessions, model, lengths):
    import torch

    ids, mask = _batch(lengths, seed=11)
    weights = torch.rand(len(lengths), len(model.module_names), generator=torch.Generator().manual_seed(3))
    weights[0] = 0.0  # a row with no domain module: general alone
    with torch.inference_mode():
        expected = model(ids, mask, weights).numpy()
        logits = model.router(model.router_features(ids, mask)).numpy()
    got, got_logits = _run(sessions(Role.QUERY_WEIGHTED), ids, mask, **{MODULE_WEIGHTS: weights.numpy()})
    assert np.abs(got - expected).max() <= TOLERANCE
    assert np.abs(got_logits - logits).max() <= TOLERANCE
    (router_logits,) = _run(sessions(Role.ROUTER, precision=None), ids, mask)
    assert np.abs(router_logits - logits).max() <= TOLERANCE


def test_ort_encoder_is_an_encoder_with_the_torch_identity(ort_fp32, torch_encoder):
    assert isinstance(ort_fp32, Encoder)
    assert ort_fp32.dimension == torch_encoder.dimension
    assert ort_fp32.version == torch_encoder.version
    assert ort_fp32.domains() == torch_encoder.domains()


def test_tokenizer_matches_the_hf_tokenizer(ort_fp32, torch_encoder, real_texts):
    texts = [*real_texts, "word " * 600, "", "Ünïcödé façade — naïve café"]
    for max_length in (16, 256):
        ids, mask = ort_fp32.tokenize(texts, max_length)
        expected = torch_encoder.tokenize(texts, max_length)
        assert np.array_equal(ids, expected["input_ids"].numpy())
        assert np.array_equal(mask, expected["attention_mask"].numpy())


def test_encode_passages_matches_torch(ort_fp32, torch_encoder, real_texts):
    texts = [*real_texts, "word " * 600]
    got = ort_fp32.encode_passages(texts, batch_size=3)
    assert np.abs(got - torch_encoder.encode_passages(texts, batch_size=3)).max() <= TOLERANCE
    assert ort_fp32.encode_passages([]).shape == (0, ort_fp32.dimension)


@pytest.mark.parametrize(
    ("domain", "routing", "graph"),
    [
        (None, RoutingMode.TOP_K, "weighted"),
        (None, RoutingMode.SOFT, "weighted"),
        (None, RoutingMode.NONE, "passage"),
        (None, RoutingMode.AUTO, "passage, then the accepting domain's encoder"),
        ("legal", None, "domain encoder (prior, one module)"),
        ("mixed", None, "weighted (prior over two modules)"),
    ],
)
def test_encode_queries_matches_torch_in_every_routing_mode(
    ort_fp32, torch_encoder, real_texts, domain, routing, graph
):
    got = ort_fp32.encode_queries(real_texts, domain=domain, routing=routing, batch_size=2)
    expected = torch_encoder.encode_queries(real_texts, domain=domain, routing=routing, batch_size=2)
    assert np.abs(got.vectors - expected.vectors).max() <= TOLERANCE, graph
    assert [set(w) for w in got.weights] == [set(w) for w in expected.weights]
    for ours, theirs in zip(got.weights, expected.weights, strict=True):
        assert all(abs(ours[name] - theirs[name]) <= 1e-5 for name in ours)
    if routing is RoutingMode.TOP_K:
        assert all(len(w) == 1 for w in got.weights)  # top-1 of two modules
    if routing is RoutingMode.AUTO:  # the test store's profiles accept some texts and refuse others
        assert {} in got.weights and any(w for w in got.weights)


def test_routing_errors_match_torch(ort_fp32):
    with pytest.raises(UnknownModuleError, match="no module is mapped to domain 'cooking'"):
        ort_fp32.encode_queries(["q"], domain="cooking")
    with pytest.raises(InputError, match="prior routing needs a domain"):
        ort_fp32.encode_queries(["q"], routing=RoutingMode.PRIOR)
