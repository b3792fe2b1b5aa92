"""One real export per test session (fp32 + int8) of a small store whose prefixes really matter."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.onnx_export.stores import TOP_K, build_store


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("onnx") / "store")


@pytest.fixture(scope="session")
def export_dir(store, tmp_path_factory) -> Path:
    from onnx_export.export import export_store

    out = tmp_path_factory.mktemp("onnx-export") / "export"
    export_store(store, out, int8=True)
    return out


@pytest.fixture(scope="session")
def torch_encoder(store):
    from ddr_search.model.encoder import TorchEncoder

    return TorchEncoder.load(store, top_k=TOP_K)


@pytest.fixture(scope="session")
def ort_fp32(export_dir, store):
    from onnx_export.runtime import OrtEncoder

    return OrtEncoder.load(export_dir, store=store, precision="fp32", query_threads=1, passage_threads=1, top_k=TOP_K)


@pytest.fixture(scope="session")
def ort_int8(export_dir, store):
    from onnx_export.runtime import OrtEncoder

    return OrtEncoder.load(export_dir, store=store, precision="int8", query_threads=1, passage_threads=1, top_k=TOP_K)
