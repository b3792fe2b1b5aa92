"""The DDR model's invariants (issue 2): start at the backbone, passages never depend on domains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddr_search.model.backbone import pool
from ddr_search.model.ddr import DDRModel
from ddr_search.model.encoder import TorchEncoder


def backbone_embeddings(backbone, texts: list[str]) -> np.ndarray:
    """The plain backbone, before DDRModel rewires it: the reference every invariant compares to."""
    batch = backbone.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = backbone.model(**batch).last_hidden_state
    return pool(hidden, batch["attention_mask"], backbone.pooling, backbone.normalize).numpy()


def perturb(module: torch.nn.Module, seed: int, gate: float = 0.5) -> None:
    """Stand-in for training: non-zero gates, moved keys/values and adapters (B off zero), so the module acts."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.keys.add_(0.5 * torch.randn(module.keys.shape, generator=generator))
        module.values.add_(0.5 * torch.randn(module.values.shape, generator=generator))
        module.gates.fill_(gate)
        for tensor in module.adapter_b.values():
            tensor.copy_(0.05 * torch.randn(tensor.shape, generator=generator))


@pytest.fixture(params=[0, 4], ids=["prefix-only", "with-adapters"])
def reference_and_encoder(fresh_backbone, real_texts, request):
    reference = backbone_embeddings(fresh_backbone, real_texts)
    # fp32 passages: these invariants are exact maths (bf16 passages have tests of their own: test_precision)
    model = DDRModel(fresh_backbone, prefix_length=16, adapter_rank=request.param)
    encoder = TorchEncoder(model, fresh_backbone.tokenizer, passage_precision="fp32")
    return reference, encoder


def test_no_modules_is_exactly_the_backbone(reference_and_encoder, real_texts):
    reference, encoder = reference_and_encoder
    assert np.abs(encoder.encode_passages(real_texts) - reference).max() <= 1e-6
    queries = encoder.encode_queries(real_texts)
    assert np.abs(queries.vectors - reference).max() <= 1e-6
    assert queries.weights == [{} for _ in real_texts]


def test_untrained_modules_leave_embeddings_at_the_backbone(reference_and_encoder, real_texts):
    reference, encoder = reference_and_encoder
    encoder.model.add_general()
    encoder.model.add_domain_module("legal")
    passages = encoder.encode_passages(real_texts)
    queries = encoder.encode_queries(real_texts, domain="legal").vectors
    for vectors in (passages, queries):
        cosine = (vectors * reference).sum(1)
        assert cosine.min() >= 0.99
        assert np.abs(vectors - reference).max() <= 1e-6  # gates at zero: an exact no-op, not just close


def test_trained_general_module_moves_embeddings(reference_and_encoder, real_texts):
    """Guards the test above: a module that acts must change the embeddings."""
    reference, encoder = reference_and_encoder
    perturb(encoder.model.add_general(), seed=1)
    assert (encoder.encode_passages(real_texts) * reference).sum(1).max() < 0.999


def test_domain_modules_never_change_passage_embeddings(reference_and_encoder, real_texts):
    _, encoder = reference_and_encoder
    model = encoder.model
    perturb(model.add_general(), seed=1)
    before = encoder.encode_passages(real_texts)
    perturb(model.add_domain_module("legal"), seed=2)
    assert np.array_equal(encoder.encode_passages(real_texts), before)
    perturb(model.add_domain_module("medical"), seed=3)
    with torch.no_grad():
        model.router.weight.normal_()
    queries = encoder.encode_queries(real_texts, domain="legal").vectors
    assert np.abs(queries - before).max() > 1e-3  # the domain module does act on queries
    assert np.array_equal(encoder.encode_passages(real_texts), before)
    model.remove_domain_module("legal")
    assert np.array_equal(encoder.encode_passages(real_texts), before)
    assert model.module_names == ["medical"]
    assert model.router.weight.shape[0] == 1


def test_positions_are_not_shifted_by_the_prefix(fresh_backbone):
    """Unlike PEFT's prefix tuning, inputs keep all 512 positions whatever P is."""
    model = DDRModel(fresh_backbone, prefix_length=128)
    perturb(model.add_general(), seed=1)
    encoder = TorchEncoder(model, fresh_backbone.tokenizer, max_passage_length=512)
    vectors = encoder.encode_passages(["word " * 600])
    assert vectors.shape == (1, 384)
    assert np.isfinite(vectors).all()


def test_adapters_act_on_queries_alone_and_start_as_an_exact_noop(fresh_backbone, real_texts):
    """A module's adapters: zero B at the start (the module is the prefix alone, bit for bit), then they move
    its queries and never a passage; the general module has none."""
    with_adapters = DDRModel(fresh_backbone, prefix_length=8, adapter_rank=4)
    perturb(with_adapters.add_general(), seed=1)
    module = with_adapters.add_domain_module("legal")
    assert module.has_adapters and not with_adapters.general.has_adapters
    encoder = TorchEncoder(with_adapters, fresh_backbone.tokenizer, passage_precision="fp32")
    passages = encoder.encode_passages(real_texts)
    with torch.no_grad():
        module.keys.copy_(torch.randn(module.keys.shape, generator=torch.Generator().manual_seed(2)))
        module.gates.fill_(0.5)
    prefix_alone = encoder.encode_queries(real_texts, domain="legal").vectors
    with torch.no_grad():
        for tensor in module.adapter_b.values():
            tensor.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(3))
    with_both = encoder.encode_queries(real_texts, domain="legal").vectors
    assert np.abs(with_both - prefix_alone).max() > 1e-3
    assert np.array_equal(encoder.encode_passages(real_texts), passages)
    # the prefix alone, bit for bit, when B is zero again
    with torch.no_grad():
        for tensor in module.adapter_b.values():
            tensor.zero_()
    assert np.array_equal(encoder.encode_queries(real_texts, domain="legal").vectors, prefix_alone)


def test_adapter_size_at_the_default_rank(fresh_backbone):
    """Prefix (P=32) plus rank-8 adapters on the six linear layers of each of MiniLM's six layers: ~2%."""
    from ddr_search.model.adapters import DEFAULT_ADAPTER_RANK

    model = DDRModel(fresh_backbone, prefix_length=32, adapter_rank=DEFAULT_ADAPTER_RANK)
    module = model.add_domain_module("legal")
    adapters = sum(p.numel() for p in module.adapter_parameters())
    # per layer: q, k, v, attention output (384 -> 384), intermediate (384 -> 1536), output (1536 -> 384)
    assert adapters == 6 * 8 * (4 * (384 + 384) + 2 * (384 + 1536)) == 331_776
    assert module.num_parameters() == adapters + 32 * 6 * 2 * 384 + 6 * 12
    assert module.num_parameters() / 22_713_216 <= 0.022  # 2.11%


def test_module_size_at_the_default_length(fresh_backbone):
    model = DDRModel(fresh_backbone)
    module = model.add_general()
    backbone_parameters = sum(p.numel() for p in model.encoder.parameters())
    # 128 prefix x 6 layers x (keys + values) x 384 hidden, plus one gate per head and layer.
    assert module.num_parameters() == 128 * 6 * 2 * 384 + 6 * 12 == 589_896
    assert backbone_parameters == 22_713_216
    assert module.num_parameters() / backbone_parameters <= 0.03  # 2.60%


def test_a_noop_general_module_is_skipped_on_the_passage_path_and_nothing_changes(fresh_backbone, real_texts):
    """Passages through a general module whose gates are all zero skip its prefix attention and run torch's
    fused attention (about 2x faster): the vectors equal those with the prefix computed to float rounding;
    an active module is kept."""
    from ddr_search.model.encoder import TorchEncoder

    model = DDRModel(fresh_backbone, prefix_length=8)
    model.add_general()
    encoder = TorchEncoder(model, fresh_backbone.tokenizer, passage_precision="fp32")
    for text in real_texts:
        batch = encoder.tokenize([text], encoder.max_passage_length)
        with torch.inference_mode():
            computed = model(batch["input_ids"], batch["attention_mask"]).numpy()  # prefix attention computed
        assert np.abs(encoder.encode_passages([text]) - computed).max() <= 1e-6
    before = encoder.encode_passages(real_texts)
    perturb(model.general, seed=1)
    assert not model.general_is_noop()
    assert np.abs(encoder.encode_passages(real_texts) - before).max() > 1e-3  # an active general module acts
