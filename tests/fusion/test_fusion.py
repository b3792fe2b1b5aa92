"""Fusion: hand-computed cases for every technique (OpenSearch's formulas) and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ddr_search.errors import ConfigError
from ddr_search.fusion import MIN_SCORE, Fused, FusionConfig, Technique, fuse, normalize

BM25 = [("a", 10.0), ("b", 6.0), ("c", 2.0)]
DENSE = [("b", 0.9), ("d", 0.7), ("a", 0.5)]


def scores(fused: list[Fused]) -> dict[str, float]:
    return {f.id: f.score for f in fused}


def test_min_max_by_hand() -> None:
    # bm25 -> a 1.0, b 0.5, c 0.001 (the minimum is floored); dense -> b 1.0, d 0.5, a 0.001.
    fused = fuse([BM25, DENSE], FusionConfig())
    assert [f.id for f in fused] == ["b", "a", "d", "c"]
    assert scores(fused) == pytest.approx({"b": 0.75, "a": 0.5005, "d": 0.25, "c": 0.0005})
    # a document missing from a list scores 0 there, and its weight still counts
    assert fused[2].sub_scores == (None, 0.7)
    assert fused[0].sub_scores == (6.0, 0.9)


def test_min_max_weights_by_hand() -> None:
    fused = fuse([BM25, DENSE], FusionConfig(weights=(0.3, 0.7)))
    assert scores(fused) == pytest.approx({"b": 0.85, "d": 0.35, "a": 0.3007, "c": 0.0003})
    assert [f.id for f in fused] == ["b", "d", "a", "c"]


def test_min_max_single_result_and_all_tied_score_one() -> None:
    assert normalize([("x", 3.2)], Technique.MIN_MAX) == [("x", 1.0)]
    assert normalize([("x", 2.0), ("y", 2.0)], Technique.MIN_MAX) == [("x", 1.0), ("y", 1.0)]


def test_l2_by_hand() -> None:
    n1, n2 = math.sqrt(140.0), math.sqrt(1.55)
    expected = {
        "a": 0.5 * 10 / n1 + 0.5 * 0.5 / n2,
        "b": 0.5 * 6 / n1 + 0.5 * 0.9 / n2,
        "c": 0.5 * 2 / n1,
        "d": 0.5 * 0.7 / n2,
    }
    fused = fuse([BM25, DENSE], FusionConfig(Technique.L2))
    assert scores(fused) == pytest.approx(expected)
    assert expected["a"] == pytest.approx(0.623382, abs=1e-6)
    assert [f.id for f in fused] == ["a", "b", "d", "c"]


def test_l2_negative_scores_leave_the_mean() -> None:
    # OpenSearch's arithmetic mean skips negative normalised scores together with their weight.
    fused = fuse([[("a", 3.0), ("b", -4.0)], [("b", 1.0)]], FusionConfig(Technique.L2))
    assert scores(fused) == pytest.approx({"a": 0.5 * 0.6, "b": 1.0})


def test_z_score_by_hand() -> None:
    bm25 = [("a", 10.0), ("b", 7.0), ("c", 1.0)]  # mean 6, sample std sqrt(21)
    dense = [("b", 0.9), ("d", 0.6), ("a", 0.5)]
    mean = (0.9 + 0.6 + 0.5) / 3
    std = math.sqrt(((0.9 - mean) ** 2 + (0.6 - mean) ** 2 + (0.5 - mean) ** 2) / 2)
    expected = {
        "a": 0.5 * 4 / math.sqrt(21) + 0.5 * MIN_SCORE,  # below the dense mean -> 0.001
        "b": 0.5 * 1 / math.sqrt(21) + 0.5 * (0.9 - mean) / std,
        "c": 0.5 * MIN_SCORE,
        "d": 0.5 * MIN_SCORE,
    }
    fused = fuse([bm25, dense], FusionConfig(Technique.Z_SCORE))
    assert scores(fused) == pytest.approx(expected)
    assert expected["b"] == pytest.approx(0.669557, abs=1e-6)
    assert [f.id for f in fused] == ["b", "a", "c", "d"]  # c and d tie: by id


def test_z_score_single_hit_keeps_its_raw_score() -> None:
    # OpenSearch 3.x: a score equal to the mean takes the list's max raw score (one hit: itself).
    assert normalize([("x", 7.5)], Technique.Z_SCORE) == [("x", 7.5)]


def test_rrf_by_hand() -> None:
    fused = fuse([BM25, DENSE], FusionConfig(Technique.RRF))
    expected = {"a": 1 / 61 + 1 / 63, "b": 1 / 62 + 1 / 61, "c": 1 / 63, "d": 1 / 62}  # a plain sum, as the node
    assert scores(fused) == pytest.approx(expected)
    assert [f.id for f in fused] == ["b", "a", "d", "c"]


def test_rrf_rank_constant() -> None:
    fused = fuse([[("a", 1.0)], [("a", 1.0)]], FusionConfig(Technique.RRF, rank_constant=1))
    assert fused[0].score == pytest.approx(1 / 2 + 1 / 2)


def test_k_and_duplicates() -> None:
    fused = fuse([[("a", 2.0), ("a", 1.0), ("b", 1.0)], []], FusionConfig(), k=1)
    assert len(fused) == 1 and fused[0].id == "a" and fused[0].sub_scores == (2.0, None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weights": (0.6, 0.6)},
        {"weights": (1.2, -0.2)},
        {"weights": ()},
        {"rank_constant": 0},
        {"technique": "harmonic"},
    ],
)
def test_bad_configs_are_refused(kwargs: dict) -> None:
    with pytest.raises((ConfigError, ValueError)):
        FusionConfig(**kwargs)


def test_weight_count_must_match_lists() -> None:
    with pytest.raises(ConfigError, match="one weight per sub-query"):
        fuse([BM25], FusionConfig())


# ---- properties ---------------------------------------------------------------------------------
ids = st.sampled_from([f"d{i}" for i in range(12)])
score = st.integers(min_value=-50, max_value=200).map(float)


@st.composite
def ranked(draw: st.DrawFn) -> list[tuple[str, float]]:
    """A sub-query's hits as a backend returns them: unique ids, scores descending."""
    doc_ids = draw(st.lists(ids, unique=True, max_size=8))
    values = sorted(draw(st.lists(score, min_size=len(doc_ids), max_size=len(doc_ids))), reverse=True)
    return list(zip(doc_ids, values, strict=True))


techniques = st.sampled_from(list(Technique))
weights = st.integers(min_value=0, max_value=10).map(lambda w: (w / 10, 1 - w / 10))


@settings(max_examples=150, deadline=None)
@given(ranked(), ranked(), techniques, weights)
def test_union_order_and_raw_scores(first, second, technique, w) -> None:
    fused = fuse([first, second], FusionConfig(technique, w))
    assert {f.id for f in fused} == {d for d, _ in first} | {d for d, _ in second}
    assert fused == sorted(fused, key=lambda f: (-f.score, f.id))
    raw = [dict(first), dict(second)]
    for f in fused:
        assert f.sub_scores == tuple(r.get(f.id) for r in raw)


@settings(max_examples=150, deadline=None)
@given(ranked(), ranked(), techniques, weights)
def test_swapping_lists_and_weights_changes_nothing(first, second, technique, w) -> None:
    a = scores(fuse([first, second], FusionConfig(technique, w)))
    b = scores(fuse([second, first], FusionConfig(technique, (w[1], w[0]))))
    assert a == pytest.approx(b)


@settings(max_examples=150, deadline=None)
@given(ranked(), ranked(), weights)
def test_min_max_is_bounded_and_affine_invariant(first, second, w) -> None:
    config = FusionConfig(Technique.MIN_MAX, w)
    base = scores(fuse([first, second], config))
    assert all(0.0 <= s <= 1.0 + 1e-12 for s in base.values())
    shifted = [(d, 4.0 * s + 1000.0) for d, s in first]  # exact in binary floating point
    assert scores(fuse([shifted, second], config)) == pytest.approx(base)


@settings(max_examples=150, deadline=None)
@given(ranked(), ranked(), weights)
def test_l2_and_z_score_are_scale_invariant(first, second, w) -> None:
    doubled = [(d, 2.0 * s) for d, s in first]
    for technique in (Technique.L2, Technique.Z_SCORE):
        if technique is Technique.Z_SCORE and first:
            # OpenSearch's z_score returns a *raw* score for a hit exactly at the mean: not invariant
            mean = sum(s for _, s in first) / len(first)
            assume(all(s != mean for _, s in first))
        config = FusionConfig(technique, w)
        assert scores(fuse([doubled, second], config)) == pytest.approx(scores(fuse([first, second], config)))


@settings(max_examples=150, deadline=None)
@given(ranked(), ranked(), weights)
def test_rrf_depends_only_on_ranks(first, second, w) -> None:
    config = FusionConfig(Technique.RRF, w)
    reranked = [(d, float(100 - i)) for i, (d, _) in enumerate(first)]
    assert scores(fuse([reranked, second], config)) == pytest.approx(scores(fuse([first, second], config)))


@settings(max_examples=100, deadline=None)
@given(ranked(), techniques)
def test_one_list_with_full_weight_keeps_its_order(only, technique) -> None:
    assume(technique is not Technique.Z_SCORE)  # z_score clips everything below the mean to 0.001
    if technique is Technique.L2:
        assume(all(s > 0 for _, s in only))  # negative l2 scores leave the mean (tested above)
    fused = fuse([only, []], FusionConfig(technique, (1.0, 0.0)))
    raw = dict(only)
    ordered = [f.id for f in fused]
    assert [raw[i] for i in ordered] == sorted(raw.values(), reverse=True)
