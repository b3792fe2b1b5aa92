"""Checksums follow the modules; an export made for another store version is refused, never used."""

from __future__ import annotations

import json
import shutil

import pytest

from ddr_search.errors import ExportError
from onnx_export.artifacts import MANIFEST, Precision, Role, read_export_manifest, sha256_file
from tests.onnx_export.stores import tiny_store


def test_changed_modules_give_new_checksums_and_the_old_export_is_refused(tiny_backbone, tmp_path):
    from onnx_export.export import export_store
    from onnx_export.runtime import OrtEncoder

    store = tiny_store(tiny_backbone, tmp_path / "store", seed=1)
    before = export_store(store, tmp_path / "export-1", backbone=tiny_backbone)
    OrtEncoder.load(tmp_path / "export-1", store=store)  # matches: loads

    tiny_store(tiny_backbone, store, seed=2)  # the legal module changes (retrained), general does not
    with pytest.raises(ExportError, match=r"was made for module store version .* run `ddr-search export"):
        OrtEncoder.load(tmp_path / "export-1", store=store)

    after = export_store(store, tmp_path / "export-2", backbone=tiny_backbone)
    assert after.store_version != before.store_version
    assert after.module_versions == {"general": 1, "legal": 2}
    legal_before = before.graph(Role.QUERY_DOMAIN, Precision.FP32, "legal").sha256
    assert after.graph(Role.QUERY_DOMAIN, Precision.FP32, "legal").sha256 != legal_before
    assert after.encoder_version == before.encoder_version  # passages need no re-embedding
    encoder = OrtEncoder.load(tmp_path / "export-2", store=store)
    assert encoder.encode_queries(["a query"], domain="legal").weights == [{"legal": 1.0}]


def test_session_export_manifest_is_complete(export_dir, store):
    from ddr_search.manifest import read_manifest

    manifest = read_export_manifest(export_dir)
    assert manifest.store_version == read_manifest(store).store_version()
    assert manifest.precisions == [Precision.FP32, Precision.INT8]
    assert manifest.dimension == 384 and manifest.opset >= 17
    roles = {(g.role, g.precision, g.module) for g in manifest.graphs.values()}
    for precision in Precision:
        assert (Role.PASSAGE, precision, None) in roles
        assert (Role.QUERY_WEIGHTED, precision, None) in roles
        assert {(Role.QUERY_DOMAIN, precision, m) for m in ("legal", "bio")} <= roles
    assert (Role.ROUTER, Precision.FP32, None) in roles
    for record in manifest.graphs.values():
        assert sha256_file(export_dir / record.file) == record.sha256
    assert "tokenizer.json" in manifest.tokenizer_files
    weighted = manifest.graph(Role.QUERY_WEIGHTED, Precision.FP32)
    assert weighted.inputs == ["input_ids", "attention_mask", "module_weights"]
    assert weighted.outputs == ["embeddings", "router_logits"]


def test_a_corrupted_graph_is_refused(export_dir, store, tmp_path):
    from onnx_export.runtime import OrtEncoder

    copy = tmp_path / "export"
    shutil.copytree(export_dir / "tokenizer", copy / "tokenizer")
    shutil.copy(export_dir / MANIFEST, copy / MANIFEST)
    (copy / "fp32").mkdir()
    (copy / "fp32" / "passage.onnx").write_bytes(b"not a graph")
    encoder = OrtEncoder.load(copy, store=store, precision="fp32")
    with pytest.raises(ExportError, match="does not match its checksum"):
        encoder.encode_passages(["text"])
    with pytest.raises(ExportError, match="missing"):
        encoder.encode_queries(["text"], domain="legal")


def test_export_for_no_store_is_refused_for_a_store(export_dir, store, tmp_path):
    from onnx_export.runtime import OrtEncoder

    copy = tmp_path / "export"
    shutil.copytree(export_dir / "tokenizer", copy / "tokenizer")
    manifest = json.loads((export_dir / MANIFEST).read_text())
    manifest["store_version"] = "none"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="made for the frozen backbone"):
        OrtEncoder.load(copy, store=store)
    with pytest.raises(ExportError, match="no module store is configured"):
        OrtEncoder.load(export_dir, store=None)
    OrtEncoder.load(export_dir, check_store_version=False)  # deployment without the store


def test_a_moved_routing_threshold_refuses_the_old_export_and_a_new_export_routes_by_it(tiny_backbone, tmp_path):
    from ddr_search.manifest import read_manifest
    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.store import load_store, recalibrate_routing, save_store
    from onnx_export.export import export_store
    from onnx_export.runtime import OrtEncoder
    from tests.onnx_export.stores import add_profiles

    store = tiny_store(tiny_backbone, tmp_path / "store", seed=1)
    backbone = load_backbone(tiny_backbone)
    model = load_store(store, backbone)
    add_profiles(model, backbone.tokenizer)
    save_store(model, store)
    export_store(store, tmp_path / "export-1", backbone=tiny_backbone)

    before, after = recalibrate_routing(store, store, "legal", 0.5, tiny_backbone)
    assert after > before
    with pytest.raises(ExportError, match=r"was made for module store version .* run `ddr-search export"):
        OrtEncoder.load(tmp_path / "export-1", store=store)
    export_store(store, tmp_path / "export-2", backbone=tiny_backbone)
    profiles = {p.module: p for p in OrtEncoder.load(tmp_path / "export-2", store=store).profiles()}
    assert profiles["legal"].threshold == read_manifest(store).modules["legal"].routing["threshold"] == after
    assert profiles["legal"].quantile == 0.5
