"""`ddr-search export` end to end on the tiny backbone (cheap to trace), then the export serves queries."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from ddr_search.cli.main import cli
from onnx_export.artifacts import read_export_manifest
from tests.onnx_export.stores import tiny_store


def test_export_command_writes_a_loadable_export(tiny_backbone, tmp_path, monkeypatch):
    from onnx_export.runtime import OrtEncoder

    monkeypatch.setenv("DDR_HOME", str(tmp_path / "home"))
    store = tiny_store(tiny_backbone, tmp_path / "store", seed=1)
    args = ["export", "--int8", "--modules", str(store), "--backbone", str(tiny_backbone)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "home" / "onnx"  # the default: DDR_HOME/onnx
    assert "int8/query-legal.onnx" in result.output
    assert read_export_manifest(out).precisions == ["fp32", "int8"]
    encoder = OrtEncoder.load(out, store=store)
    assert encoder.precision == "int8"
    assert encoder.encode_queries(["contract law"], domain="legal").vectors.shape == (1, 64)


def test_export_command_refuses_a_folder_that_is_not_an_export(tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.delenv("DDR_MODULES", raising=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["export", "--backbone", str(tiny_backbone), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "is not an ONNX export" in result.output
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_export_without_a_store_serves_the_frozen_backbone(tiny_backbone, tmp_path, monkeypatch):
    from onnx_export.runtime import OrtEncoder

    monkeypatch.delenv("DDR_MODULES", raising=False)
    out = tmp_path / "onnx"
    result = CliRunner().invoke(cli, ["export", "--backbone", str(tiny_backbone), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = read_export_manifest(out)
    assert manifest.store_version == "none" and manifest.module_names == []
    assert [g.file for g in manifest.graphs.values()] == ["fp32/passage.onnx"]  # no modules: no router
    encoder = OrtEncoder.load(out, store=None)
    encoding = encoder.encode_queries(["a query"])
    assert encoding.weights == [{}]
    assert np.allclose(encoding.vectors, encoder.encode_passages(["a query"]), atol=1e-6)
