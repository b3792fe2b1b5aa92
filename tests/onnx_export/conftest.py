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

    return TorchEncoder.load(store, top_k=TOP_K, passage_precision="fp32")  # the exact reference


@pytest.fixture(scope="session")
def ort_fp32(export_dir, store):
    from onnx_export.runtime import OrtEncoder

    return OrtEncoder.load(export_dir, store=store, precision="fp32", query_threads=1, passage_threads=1, top_k=TOP_K)


@pytest.fixture(scope="session")
def ort_int8(export_dir, store):
    from onnx_export.runtime import OrtEncoder

    return OrtEncoder.load(export_dir, store=store, precision="int8", query_threads=1, passage_threads=1, top_k=TOP_K)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide BERT with random weights: re-exporting it twice is cheap (the real one is slow)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ddr_search.model.backbone import packaged_backbone_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    BertModel(config).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(packaged_backbone_path()), local_files_only=True).save_pretrained(str(folder))
    return folder
