"""Per-module routing thresholds (issue 10): a threshold can move to another quantile without retraining,
and the quantile a module earns on dev queries leaves the default only where the evidence is clear."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from ddr_search.cli.main import cli
from ddr_search.errors import InputError
from ddr_search.factory import PRETRAINED_DIR
from ddr_search.manifest import read_manifest
from ddr_search.model.backbone import load_backbone
from ddr_search.model.encoder import TorchEncoder
from ddr_search.model.store import load_store
from ddr_search.routing import ProfileMethod, calibrate, read_profiles, recalibrate, write_profile
from ddr_search.routing_quantile import RoutingEvidence, choose_quantile
from ddr_search.training.config import TrainConfig
from ddr_search.types import RoutingMode

QUANTILES = (0.01, 0.05, 0.1, 0.2, 0.4)


def _vectors(n: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 16)) + 2.0 * rng.normal(size=(1, 16))).astype(np.float32)


def test_recalibrating_equals_calibrating_anew_at_the_new_quantile():
    vectors = _vectors()
    moved = recalibrate(calibrate("d", vectors), 0.3)
    anew = calibrate("d", vectors, quantile=0.3)
    assert moved.threshold == anew.threshold and moved.quantile == anew.quantile == 0.3
    assert np.array_equal(moved.vectors, anew.vectors)
    assert moved.threshold > calibrate("d", vectors).threshold  # a higher quantile is a stricter threshold


def test_a_centroid_profile_cannot_be_recalibrated_and_quantiles_stay_in_range():
    with pytest.raises(InputError, match="centroid"):
        recalibrate(calibrate("d", _vectors(), method=ProfileMethod.CENTROID), 0.2)
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        recalibrate(calibrate("d", _vectors()), 1.0)
    with pytest.raises(ValueError, match="routing_quantile"):
        TrainConfig(routing_quantile=1.5)


def test_the_quantile_is_recorded_and_an_older_record_without_it_still_loads(tmp_path):
    profile = calibrate("d", _vectors(), quantile=0.2)
    record = write_profile(tmp_path, profile, "general")
    assert record["quantile"] == 0.2 and read_profiles(tmp_path, {"d": record})[1]["d"].quantile == 0.2
    older = {k: v for k, v in record.items() if k != "quantile"}
    loaded = read_profiles(tmp_path, {"d": older})[1]["d"]
    assert loaded.quantile is None and loaded.threshold == profile.threshold


def _thresholds() -> dict[float, float]:
    return {q: 0.5 + q for q in QUANTILES}  # scores between two thresholds separate the candidates


def test_a_module_that_hurts_foreign_queries_it_accepts_gets_a_stricter_threshold():
    rng = np.random.default_rng(0)
    own = RoutingEvidence(rng.uniform(0.7, 1.0, 400).astype(np.float32), np.full(400, 0.05, np.float32))
    # foreign queries scoring just above the default threshold lose 0.2 each through the module
    foreign = RoutingEvidence(rng.uniform(0.52, 0.6, 300).astype(np.float32), np.full(300, -0.2, np.float32))
    choice = choose_quantile(_thresholds(), own, [foreign])
    assert choice.quantile == 0.1  # the loosest threshold above every foreign query: own queries all kept
    assert choice.utilities[0.1] == pytest.approx(0.05)
    assert choose_quantile(_thresholds(), own, [foreign], max_loss=None).confidence[0.1] == 1.0  # no cap: the bootstrap


def test_a_loss_on_one_other_set_is_not_averaged_away_over_the_rest():
    rng = np.random.default_rng(2)
    own = RoutingEvidence(rng.uniform(0.5, 1.0, 1000).astype(np.float32), np.full(1000, 0.05, np.float32))
    # one other set loses 0.02 a query above the 0.1 threshold; nine others are never accepted
    hurt = RoutingEvidence(rng.uniform(0.52, 0.6, 300).astype(np.float32), np.full(300, -0.02, np.float32))
    untouched = [RoutingEvidence(np.zeros(100, np.float32), np.full(100, -0.5, np.float32)) for _ in range(9)]
    averaged = choose_quantile(_thresholds(), own, [hurt, *untouched], max_loss=None)
    assert averaged.quantile < 0.1  # the mean over ten sets hides the hurt set's -0.0125
    capped = choose_quantile(_thresholds(), own, [hurt, *untouched])
    assert capped.quantile == 0.1  # the loosest threshold costing no set more than 0.005 stands in for 0.05


def test_a_flat_noisy_curve_keeps_the_default_and_a_clear_own_gain_loosens_it():
    rng = np.random.default_rng(1)
    scores = np.linspace(0.5, 1.0, 80, dtype=np.float32)
    flat = RoutingEvidence(scores, np.tile(np.float32([0.1, -0.1]), 40))  # every band of queries nets ~0
    choice = choose_quantile(_thresholds(), flat, [])
    assert choice.quantile == 0.05 and max(choice.confidence.values()) < 0.95
    helps = RoutingEvidence(rng.uniform(0.5, 0.6, 2000).astype(np.float32), np.full(2000, 0.1, np.float32))
    assert choose_quantile(_thresholds(), helps, []).quantile == 0.01
    with pytest.raises(ValueError, match="default"):
        choose_quantile({0.1: 0.6}, helps, [])


def test_calibrate_command_moves_one_threshold_and_nothing_else(tmp_path):
    home, out = tmp_path / "home", tmp_path / "store"
    result = CliRunner().invoke(
        cli, ["modules", "calibrate", "nfcorpus", "--quantile", "0.5", "--out", str(out)], env={"DDR_HOME": str(home)}
    )
    assert result.exit_code == 0, result.output
    before, after = read_manifest(PRETRAINED_DIR), read_manifest(out)
    for name, record in before.modules.items():
        moved = after.modules[name]
        assert (moved.sha256, moved.version, moved.fusion) == (record.sha256, record.version, record.fusion)
        if name != "nfcorpus":
            assert moved.routing == record.routing
    shipped = load_store(PRETRAINED_DIR, load_backbone())
    assert after.modules["nfcorpus"].routing["threshold"] == recalibrate(shipped.profiles["nfcorpus"], 0.5).threshold
    # queries that reach another module, or none, before and after are encoded bit for bit as before
    texts = [
        "statute of limitations for fraud",
        "vitamin d and bone density in older women",
        "what are the symptoms of glaucoma",
        "does smoking cause lung cancer in mice",
        "how much fiber should i eat a day",
        "treatment for type 2 diabetes",
    ]
    old = TorchEncoder.load(PRETRAINED_DIR).encode_queries(texts, routing=RoutingMode.AUTO)
    new = TorchEncoder.load(out).encode_queries(texts, routing=RoutingMode.AUTO)
    kept = [i for i in range(len(texts)) if "nfcorpus" not in old.weights[i] and "nfcorpus" not in new.weights[i]]
    assert kept and all(np.array_equal(old.vectors[i], new.vectors[i]) for i in kept)
    args = ["modules", "calibrate", "legal", "--quantile", "0.2", "--out", str(tmp_path / "x")]
    unknown = CliRunner().invoke(cli, args, env={"DDR_HOME": str(home)})
    assert unknown.exit_code != 0 and "'legal' has no routing profile" in unknown.output
    assert not (tmp_path / "x").exists()
