"""Module store (issue 2): save -> load is exact for every routing mode; mismatches are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ddr_search.errors import ModuleStoreError
from ddr_search.manifest import read_manifest
from ddr_search.model.backbone import load_backbone, packaged_backbone_path
from ddr_search.model.ddr import DDRModel
from ddr_search.model.encoder import TorchEncoder
from ddr_search.model.store import load_store, save_store
from ddr_search.types import RoutingMode
from tests.model.test_prefix_invariants import perturb


@pytest.fixture()
def saved_store(fresh_backbone, tmp_path):
    model = DDRModel(fresh_backbone, prefix_length=8, adapter_rank=2)
    perturb(model.add_general(), seed=1)
    perturb(model.add_domain_module("legal"), seed=2)
    perturb(model.add_domain_module("medical"), seed=3)
    with torch.no_grad():
        model.router.weight.normal_(generator=torch.Generator().manual_seed(4))
    save_store(model, tmp_path / "store")
    return TorchEncoder(model, fresh_backbone.tokenizer), tmp_path / "store"


@pytest.mark.parametrize(
    ("routing", "domain"),
    [(RoutingMode.SOFT, None), (RoutingMode.TOP_K, None), (RoutingMode.PRIOR, "legal"), (RoutingMode.NONE, None)],
)
def test_save_load_reproduces_embeddings_exactly(saved_store, real_texts, routing, domain):
    original, path = saved_store
    loaded = TorchEncoder.load(path)
    assert np.array_equal(loaded.encode_passages(real_texts), original.encode_passages(real_texts))
    a = original.encode_queries(real_texts, domain=domain, routing=routing)
    b = loaded.encode_queries(real_texts, domain=domain, routing=routing)
    assert np.array_equal(a.vectors, b.vectors)
    assert a.weights == b.weights
    assert loaded.version == original.version


def test_manifest_records_what_users_need(saved_store):
    _, path = saved_store
    manifest = read_manifest(path)
    assert manifest.prefix_length == 8
    assert manifest.adapter_rank == 2
    assert set(manifest.modules) == {"general", "legal", "medical"}
    assert manifest.router_rows == ["legal", "medical"]
    assert manifest.domains == {"legal": ["legal"], "medical": ["medical"]}
    assert manifest.backbone["hidden_size"] == 384
    assert all(record.version == 1 for record in manifest.modules.values())


def test_versions_bump_only_for_changed_modules(saved_store):
    original, path = saved_store
    before = read_manifest(path).store_version()
    with torch.no_grad():
        original.model.domain_modules["legal"].gates.add_(0.1)
    save_store(original.model, path)
    manifest = read_manifest(path)
    assert manifest.modules["legal"].version == 2
    assert manifest.modules["general"].version == 1
    assert manifest.store_version() != before


def test_store_for_another_backbone_is_refused(saved_store, tmp_path):
    _, path = saved_store
    other = tmp_path / "other-backbone"
    shutil.copytree(packaged_backbone_path(), other)
    config = json.loads((other / "config.json").read_text())
    config["layer_norm_eps"] = 1e-11  # other weights/config => another fingerprint
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModuleStoreError, match=r"trained on backbone .* but the loaded backbone .*--backbone"):
        load_store(path, load_backbone(other))


def test_store_for_another_prefix_length_is_refused(saved_store):
    _, path = saved_store
    with pytest.raises(ModuleStoreError, match="length 8, but length 128 was requested"):
        load_store(path, load_backbone(), prefix_length=128)


def test_corrupt_module_file_is_refused(saved_store):
    _, path = saved_store
    target = path / "modules" / "legal.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModuleStoreError, match=r"legal\.safetensors does not match its manifest checksum"):
        load_store(path, load_backbone())


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(ModuleStoreError, match="is not a module store"):
        load_store(tmp_path, load_backbone())


def test_a_store_saved_to_a_new_folder_keeps_every_module_history(saved_store, tmp_path):
    """Each shipped store is the previous one plus a module, written to a new folder: the modules it
    carries over keep their versions and training notes (they were lost before)."""
    _, source = saved_store
    save_store(load_store(source, load_backbone()), source, notes={"legal": {"dev_after": 0.5}})
    model = load_store(source, load_backbone())
    perturb(model.add_domain_module("tech"), seed=5)
    save_store(model, tmp_path / "next", notes={"tech": {"dev_after": 0.7}})
    carried, fresh = read_manifest(source), read_manifest(tmp_path / "next")
    assert fresh.modules["legal"].notes == {"dev_after": 0.5} == carried.modules["legal"].notes
    for name in ("general", "legal", "medical"):
        assert fresh.modules[name].version == carried.modules[name].version
    assert fresh.modules["tech"].notes == {"dev_after": 0.7} and fresh.modules["tech"].version == 1
