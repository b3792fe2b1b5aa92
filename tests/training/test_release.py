"""The release recipe of the shipped modules (scripts/release_modules.py) on a small slice of real data:
every shipped domain gets a module, a routing profile and a store that loads."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from safetensors.torch import load_file

from ddr_search.fusion import Technique
from ddr_search.manifest import read_manifest
from tests.conftest import REPO


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("release_modules", REPO / "scripts" / "release_modules.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_small_slice_release_has_every_shipped_domain_with_a_profile(recipe, shared_data, tmp_path):
    summary = recipe.release(shared_data, tmp_path / "work", limit=16, cache_dir=tmp_path / "cache")
    names = [r.name for r in recipe.RECIPES]
    assert list(summary) == [*names, "routing", "general"]
    assert summary["general"]["fusion"]["technique"] in {t.value for t in Technique}
    manifest = read_manifest(tmp_path / "work" / names[-1])
    assert manifest.router_rows == names  # each store is the previous one plus one module
    assert manifest.adapter_rank > 0  # every domain module carries query adapters (a slice may keep them at zero)
    for name in names:
        tensors = load_file(str(tmp_path / "work" / names[-1] / "modules" / f"{name}.safetensors"))
        assert sum(key.startswith("adapter_b.") for key in tensors) == 36, name  # 6 layers x 6 linear layers
    assert manifest.modules["general"].fusion is not None  # chosen on the zero-shot sets
    for name in names:
        record = manifest.modules[name]
        assert record.routing is not None and record.routing["method"] == "knn"
        assert record.routing["queries"] >= 16
        chosen = summary["routing"][name]  # each threshold chosen on dev queries and recorded with the module
        assert chosen["quantile"] in recipe.QUANTILES
        assert set(chosen["dev_utility_by_quantile"]) == set(recipe.QUANTILES)
        assert record.routing["quantile"] == record.notes["routing_quantile"] == chosen["quantile"]
    shipped = read_manifest(recipe.PRETRAINED)  # what the package ships follows the same recipes
    assert sorted(shipped.router_rows) == sorted(names)  # in any order: `--retrain` moves a module to the end
    for r in recipe.RECIPES:  # and was trained with each recipe's keep loss (on its keep queries) or without it
        notes = shipped.modules[r.name].notes
        assert notes.get("keep_weight", 0.0) == (recipe.KEEP_WEIGHT if r.keep else 0.0)
        assert notes.get("keep_queries", 0) == len(recipe.keep_texts(r, shared_data, None) or ())
    assert all(shipped.modules[n].routing is not None for n in names)
    assert all("routing_quantile" in shipped.modules[n].notes for n in names)
