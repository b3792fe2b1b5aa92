"""A store whose general module is a no-op (all gates zero, as the shipped one): the passage graph is the
backbone without prefix attention, while domain query graphs are still baked from a prefixed template."""

from __future__ import annotations

import numpy as np

TEXTS = ["statute of limitations for fraud", "vitamin d and bone density in older adults", "a"]


def test_a_noop_general_module_gives_passages_a_graph_without_prefix_attention(tiny_backbone, tmp_path) -> None:
    import onnx

    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.ddr import DDRModel
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.model.store import save_store
    from onnx_export.artifacts import PASSAGE_FILE, domain_file
    from onnx_export.export import TEMPLATE_FILE, export_store
    from onnx_export.runtime import OrtEncoder
    from tests.onnx_export.stores import perturb

    model = DDRModel(load_backbone(tiny_backbone), prefix_length=4)
    model.add_general()
    perturb(model.add_domain_module("legal"), 1)
    assert model.general_is_noop()
    store = tmp_path / "store"
    save_store(model, store)
    out = tmp_path / "export"
    export_store(store, out, backbone=tiny_backbone)

    def prefix_tensors(file: str) -> list[str]:
        return [i.name for i in onnx.load(str(out / "fp32" / file)).graph.initializer if ".general." in i.name]

    assert prefix_tensors(PASSAGE_FILE) == []
    assert len(prefix_tensors(domain_file("legal"))) == 3  # keys, values, gates
    assert not (out / "fp32" / TEMPLATE_FILE).exists()

    torch_encoder = TorchEncoder.load(store, tiny_backbone)
    ort = OrtEncoder.load(out, store=store, query_threads=1, passage_threads=1)
    assert np.abs(ort.encode_passages(TEXTS) - torch_encoder.encode_passages(TEXTS)).max() <= 1e-4
    legal_ort = ort.encode_queries(TEXTS, domain="legal").vectors
    legal_torch = torch_encoder.encode_queries(TEXTS, domain="legal").vectors
    assert np.abs(legal_ort - legal_torch).max() <= 1e-4
    assert np.abs(legal_torch - torch_encoder.encode_passages(TEXTS)).max() > 1e-3  # the module really acts
