"""Auto routing (issue 10): a query no domain accepts is the general module alone, bit for bit, and
adding or removing a module changes nothing for the queries that do not route to it, with or without a
routing background (queries of no domain that every profile is scored against)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddr_search.errors import ModuleStoreError
from ddr_search.manifest import read_manifest
from ddr_search.model.backbone import load_backbone
from ddr_search.model.ddr import DDRModel
from ddr_search.model.encoder import TorchEncoder
from ddr_search.model.store import load_store, save_store
from ddr_search.routing import (
    PROFILES_DIR,
    DomainProfile,
    ProfileMethod,
    background_profile,
    background_scores,
    calibrate,
    choose_domains,
    leave_one_out_scores,
    profile_rows,
)
from ddr_search.types import RoutingMode

LEGAL = [
    "statute of limitations for breach of contract claims",
    "can a landlord keep my security deposit for normal wear",
    "how to file a small claims lawsuit against a contractor",
    "is a verbal agreement legally binding in court",
    "what damages can I sue for after wrongful termination",
    "how long does probate take when there is no will",
    "tenant rights when the lease is broken early",
    "appeal a judgment after the deadline passed",
]
COOKING = [
    "how long to roast a whole chicken at 200 degrees",
    "substitute for buttermilk in pancake batter",
    "why does my bread dough not rise overnight",
    "best way to caramelise onions without burning them",
    "how much salt to brine a pork shoulder",
    "can you freeze cooked rice and reheat it safely",
    "what oil is best for deep frying fish",
    "how to keep pasta from sticking while boiling",
]
ASTRONOMY = [
    "how far away is the andromeda galaxy in light years",
    "why does the moon always show the same face to earth",
    "what causes a total solar eclipse",
    "how are neutron stars formed after a supernova",
    "what is the temperature on the surface of venus",
    "how many moons does jupiter have",
    "what is a black hole event horizon",
    "how do astronomers measure the distance to stars",
]
OFF_TOPIC = ["who painted the mona lisa", "football world cup winners list", "how to change a car tyre"]


def _perturb(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.gates.fill_(0.3)
        for tensor in (module.keys, module.values):
            tensor.add_(0.3 * torch.randn(tensor.shape, generator=generator))
        for tensor in module.adapter_b.values():  # domain modules' query adapters act too
            tensor.copy_(0.05 * torch.randn(tensor.shape, generator=generator))


def _with_domain(model: DDRModel, tokenizer, name: str, queries: list[str], seed: int) -> None:
    """A trained-looking module plus its profile, built from its queries' general-module vectors."""
    general = TorchEncoder(model.eval(), tokenizer).encode_queries(queries, routing=RoutingMode.NONE)
    module = model.add_domain_module(name)
    module.keys.data.copy_(model.general.keys.roll(seed, dims=1))
    module.values.data.copy_(model.general.values.roll(seed, dims=1))
    _perturb(module, seed)
    background = model.routing_background
    model.profiles[name] = calibrate(name, general.vectors, quantile=0.25, neighbours=3, background=background)


BACKGROUND = [
    "who wrote the novel war and peace",
    "what is the capital city of australia",
    "when did the first world war end",
    "how tall is mount everest",
    "who invented the telephone",
    "what language is spoken in brazil",
]


@pytest.fixture(params=[False, True], ids=["no-background", "background"])
def model(request, fresh_backbone) -> DDRModel:
    model = DDRModel(fresh_backbone, prefix_length=4, adapter_rank=2)
    _perturb(model.add_general(), 0)  # a general module that matters: "alone" must still mean general
    if request.param:
        general = TorchEncoder(model.eval(), fresh_backbone.tokenizer).encode_queries(
            BACKGROUND, routing=RoutingMode.NONE
        )
        model.routing_background = background_profile(general.vectors)
    _with_domain(model, fresh_backbone.tokenizer, "legal", LEGAL, 1)
    _with_domain(model, fresh_backbone.tokenizer, "cooking", COOKING, 2)
    return model.eval()


def encode(model: DDRModel, tokenizer, texts: list[str], routing: RoutingMode = RoutingMode.AUTO):
    return TorchEncoder(model, tokenizer).encode_queries(texts, routing=routing)


QUERIES = [
    "my landlord refuses to return the deposit, can I sue",
    "how long should I knead bread dough",
    "what is the distance from earth to mars",
    *OFF_TOPIC,
]


def test_in_domain_queries_reach_their_module_and_others_stay_general(model, fresh_backbone):
    weights = encode(model, fresh_backbone.tokenizer, QUERIES).weights
    assert weights[0] == {"legal": 1.0}
    assert weights[1] == {"cooking": 1.0}
    assert weights[2:] == [{}] * 4  # astronomy and off-topic: the general module alone


def test_a_query_no_domain_accepts_is_the_general_module_alone_bit_for_bit(model, fresh_backbone):
    auto = encode(model, fresh_backbone.tokenizer, QUERIES)
    alone = encode(model, fresh_backbone.tokenizer, QUERIES, RoutingMode.NONE)
    for row, weights in enumerate(auto.weights):
        same = np.array_equal(auto.vectors[row], alone.vectors[row])
        assert same == (not weights), (row, weights)


def test_a_routed_query_is_encoded_as_prior_routing_to_that_domain(model, fresh_backbone):
    auto = encode(model, fresh_backbone.tokenizer, QUERIES[:1])
    prior = TorchEncoder(model, fresh_backbone.tokenizer).encode_queries(QUERIES[:1], domain="legal")
    np.testing.assert_allclose(auto.vectors, prior.vectors, atol=1e-6)


def test_adding_and_removing_a_domain_leaves_other_queries_bit_identical(model, fresh_backbone, tmp_path):
    tokenizer = fresh_backbone.tokenizer
    before = encode(model, tokenizer, QUERIES)
    _with_domain(model, tokenizer, "astronomy", ASTRONOMY, 3)
    after = encode(model, tokenizer, QUERIES)
    assert after.weights[2] == {"astronomy": 1.0}  # the new module takes its own query ...
    for row in (0, 1, 3, 4, 5):  # ... and nothing else moves, not even in the last bit
        assert after.weights[row] == before.weights[row]
        assert np.array_equal(after.vectors[row], before.vectors[row])
    save_store(model, tmp_path / "store")
    reloaded = load_store(tmp_path / "store", load_backbone())  # a backbone of its own (store rewires it)
    assert np.array_equal(encode(reloaded, tokenizer, QUERIES).vectors, after.vectors)
    reloaded.remove_domain_module("astronomy")
    assert np.array_equal(encode(reloaded, tokenizer, QUERIES).vectors, before.vectors)


def test_profiles_round_trip_and_a_tampered_profile_is_refused(model, fresh_backbone, tmp_path):
    store = tmp_path / "store"
    save_store(model, store)
    loaded = load_store(store, load_backbone())
    for name, profile in model.profiles.items():
        assert np.array_equal(loaded.profiles[name].vectors, profile.vectors)
        assert loaded.profiles[name].threshold == profile.threshold
        assert (loaded.profiles[name].background is None) == (model.routing_background is None)
    if model.routing_background is not None:  # the general module's profile: one copy every domain scores against
        assert np.array_equal(loaded.routing_background, model.routing_background)
        assert read_manifest(store).modules["general"].routing["role"] == "background"
        (store / PROFILES_DIR / "general.safetensors").unlink()
        with pytest.raises(ModuleStoreError, match=r"general\.safetensors is listed in the manifest but missing"):
            load_store(store, load_backbone())
        return
    file = store / PROFILES_DIR / "legal.safetensors"
    file.write_bytes(file.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ModuleStoreError, match=r"legal\.safetensors does not match its manifest checksum"):
        load_store(store, load_backbone())


@pytest.mark.parametrize("method", list(ProfileMethod))
def test_the_threshold_lets_the_chosen_share_of_training_queries_fall_below(method):
    vectors = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32) + 2.0
    profile = calibrate("x", vectors, method=method, quantile=0.1, neighbours=5)
    below = leave_one_out_scores(vectors, method, 5) < profile.threshold
    assert below.mean() == pytest.approx(0.1, abs=0.02)  # stored vectors are float16-rounded


def test_a_profile_from_only_the_rows_it_keeps_equals_one_from_every_query():
    """Training encodes only `profile_rows` of its queries (label-free corpora make tens of thousands)."""
    vectors = np.random.default_rng(1).normal(size=(300, 8)).astype(np.float32)
    whole = calibrate("x", vectors, limit=100, seed=3, neighbours=5)
    kept = calibrate("x", vectors[profile_rows(300, limit=100, seed=3)], limit=100, seed=3, neighbours=5)
    assert np.array_equal(whole.vectors, kept.vectors) and whole.threshold == kept.threshold
    assert np.array_equal(profile_rows(50, limit=100), np.arange(50))


def test_threads_encoding_at_once_each_see_their_own_prefixes(model, fresh_backbone):
    """The prefix slot is per thread: a query thread routed to a module and one on the general module
    alone, running together, get what each gets alone (a shared slot mixed them up)."""
    from concurrent.futures import ThreadPoolExecutor

    encoder = TorchEncoder(model, fresh_backbone.tokenizer)
    alone = {
        "legal": encoder.encode_queries(QUERIES, domain="legal").vectors,
        "none": encoder.encode_queries(QUERIES, routing=RoutingMode.NONE).vectors,
    }

    def run(kind: str) -> list[np.ndarray]:
        options = {"domain": "legal"} if kind == "legal" else {"routing": RoutingMode.NONE}
        return [encoder.encode_queries(QUERIES, **options).vectors for _ in range(6)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(("legal", "none"), pool.map(run, ("legal", "none")), strict=True))
    for kind, runs in results.items():
        for vectors in runs:
            np.testing.assert_allclose(vectors, alone[kind], atol=1e-6)


def test_a_domain_score_is_its_similarity_minus_the_backgrounds():
    rng = np.random.default_rng(2)
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    own, background, queries = (unit(rng.normal(size=(n, 8))).astype(np.float32) for n in (40, 30, 5))
    plain = calibrate("x", own, neighbours=4)
    relative = calibrate("x", own, neighbours=4, background=background_profile(background))
    expected = plain.scores(queries) - background_scores(queries, relative.background, 4)
    np.testing.assert_allclose(relative.scores(queries), expected, atol=1e-6)
    loo = leave_one_out_scores(relative.vectors, ProfileMethod.KNN, 4, relative.background)
    assert (loo < relative.threshold).mean() == pytest.approx(0.05, abs=0.03)  # calibrated on the relative score


def test_among_accepting_domains_the_highest_score_wins_not_the_largest_margin():
    profiles = [DomainProfile(n, np.zeros((1, 2), np.float32), t) for n, t in (("a", 0.1), ("b", 0.5), ("c", 0.9))]
    margins = np.array([[0.3, 0.2, -0.1], [-0.2, -0.1, -0.3]], dtype=np.float32)  # scores a 0.4, b 0.7; c rejects
    assert choose_domains(margins, profiles) == ["b", None]
