"""Routing modes (issue 2): soft sums to 1, top-k keeps k, prior keeps the mapped modules."""

from __future__ import annotations

import pytest
import torch

from ddr_search.errors import InputError, UnknownModuleError
from ddr_search.model.ddr import DDRModel
from ddr_search.model.encoder import TorchEncoder
from ddr_search.model.router import routing_weights
from ddr_search.types import RoutingMode


@pytest.fixture()
def routed_encoder(fresh_backbone):
    model = DDRModel(fresh_backbone, prefix_length=8)
    model.add_general()
    for name in ("legal", "medical", "tech", "finance"):
        model.add_domain_module(name)
    model.domain_map["health"] = ["medical", "finance"]  # one domain may map to several modules
    with torch.no_grad():
        model.router.weight.normal_(generator=torch.Generator().manual_seed(0))
    return TorchEncoder(model, fresh_backbone.tokenizer, top_k=2)


def test_soft_weights_sum_to_one(routed_encoder, real_texts):
    weights = routed_encoder.encode_queries(real_texts, routing=RoutingMode.SOFT).weights
    for row in weights:
        assert set(row) == {"legal", "medical", "tech", "finance"}
        assert sum(row.values()) == pytest.approx(1.0, abs=1e-6)


def test_top_k_keeps_exactly_k_without_renormalising(routed_encoder, real_texts):
    soft = routed_encoder.encode_queries(real_texts, routing=RoutingMode.SOFT).weights
    top = routed_encoder.encode_queries(real_texts, routing=RoutingMode.TOP_K).weights
    for soft_row, top_row in zip(soft, top, strict=True):
        assert len(top_row) == 2
        largest = sorted(soft_row, key=soft_row.get, reverse=True)[:2]
        assert set(top_row) == set(largest)
        for name, weight in top_row.items():
            assert weight == pytest.approx(soft_row[name], abs=1e-6)


def test_prior_keeps_only_the_mapped_modules(routed_encoder, real_texts):
    assert routed_encoder.encode_queries(real_texts, domain="legal").weights == [{"legal": 1.0}] * len(real_texts)
    for row in routed_encoder.encode_queries(real_texts, domain="health").weights:
        assert set(row) <= {"medical", "finance"}
        assert sum(row.values()) == pytest.approx(1.0, abs=1e-6)


def test_unknown_domain_is_an_error_not_a_fallback(routed_encoder):
    with pytest.raises(UnknownModuleError, match=r"'sports'.*finance, health, legal, medical, tech"):
        routed_encoder.encode_queries(["who won"], domain="sports")


def test_prior_without_a_domain_is_an_error(routed_encoder):
    with pytest.raises(InputError, match="prior routing needs a domain"):
        routed_encoder.encode_queries(["q"], routing=RoutingMode.PRIOR)


def test_routing_weights_function_directly():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    assert routing_weights(logits, RoutingMode.NONE).sum() == 0
    top1 = routing_weights(logits, RoutingMode.TOP_K, top_k=1)
    assert int((top1 > 0).sum()) == 1
    assert float(top1[0, 0]) == pytest.approx(float(torch.softmax(logits, -1)[0, 0]))
    prior = routing_weights(logits, RoutingMode.PRIOR, allowed=[[2, 3]])
    assert prior[0, :2].sum() == 0
    assert float(prior.sum()) == pytest.approx(1.0)
