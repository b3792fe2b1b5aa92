"""build_encoder picks the ONNX export when it matches the store, torch otherwise; with bf16 passages
(CPUs with native bf16) the export answers queries and torch's bf16 encoder the passages."""

from __future__ import annotations

import shutil

import pytest

from ddr_search.errors import ExportError
from ddr_search.settings import Settings
from onnx_export.runtime import OrtEncoder


def test_build_encoder_uses_a_matching_export(export_dir, store, tmp_path):
    from ddr_search.factory import build_encoder
    from onnx_export.runtime import OrtEncoder

    settings = Settings(home=tmp_path, modules=store, onnx_dir=export_dir, passage_precision="fp32")
    encoder = build_encoder(settings)
    assert isinstance(encoder, OrtEncoder)
    assert encoder.precision == "int8"  # int8 was exported, so it serves


def test_explicit_stale_export_is_refused_and_default_one_falls_back_to_torch(export_dir, store, tmp_path, caplog):
    import torch

    from ddr_search.factory import build_encoder
    from ddr_search.model.backbone import load_backbone
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.model.store import load_store, save_store

    changed = tmp_path / "store"
    shutil.copytree(store, changed)
    model = load_store(changed, load_backbone())
    with torch.no_grad():
        model.domain_modules["bio"].gates.add_(0.1)
    save_store(model, changed)

    with pytest.raises(ExportError, match="was made for module store version"):
        build_encoder(Settings(home=tmp_path, modules=changed, onnx_dir=export_dir))

    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "onnx").symlink_to(export_dir)  # the default location, DDR_ONNX_DIR unset
    encoder = build_encoder(Settings(home=tmp_path / "home", modules=changed))
    assert isinstance(encoder, TorchEncoder)
    assert "using the torch encoder meanwhile" in caplog.text


def test_explicit_missing_export_is_an_error(tmp_path):
    from ddr_search.factory import build_encoder

    with pytest.raises(ExportError, match="holds no ONNX export"):
        build_encoder(Settings(home=tmp_path, onnx_dir=tmp_path / "nothing"))


def test_loading_and_querying_an_onnx_export_leaves_torch_out(export_dir, store) -> None:
    """The ONNX Runtime query path (manifest, routing, encoders) needs no torch: a process that loads an
    export and encodes a query and a passage never imports it."""
    code = (
        "import sys\n"
        "from onnx_export.runtime import OrtEncoder\n"
        f"encoder = OrtEncoder.load({str(export_dir)!r}, store={str(store)!r}, query_threads=1, passage_threads=1)\n"
        "encoder.encode_queries(['fraud limitations'])\n"
        "encoder.encode_passages(['The statute of limitations for fraud.'])\n"
        "print('torch' in sys.modules)\n"
    )
    assert last_line_of_python(code) == "False"


def test_a_worker_process_gets_its_share_of_the_cores_on_the_onnx_path(export_dir, store, tmp_path):
    from ddr_search.factory import build_encoder

    settings = Settings(home=tmp_path, modules=store, onnx_dir=export_dir, passage_precision="fp32")
    assert isinstance(build_encoder(settings, passage_threads=1), OrtEncoder)
    assert build_encoder(settings, passage_threads=1).passage_threads == 1
    assert build_encoder(settings).passage_threads == 0  # in-process ingest: every core


@pytest.mark.parametrize(("native_bf16", "mixed"), [(True, True), (False, False)])
def test_auto_precision_mixes_only_where_the_cpu_has_native_bf16(
    export_dir, store, tmp_path, monkeypatch, native_bf16, mixed
):
    from ddr_search.factory import build_encoder
    from ddr_search.mixed_encoder import MixedEncoder
    from ddr_search.model import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native_bf16)
    encoder = build_encoder(Settings(home=tmp_path, modules=store, onnx_dir=export_dir))
    assert isinstance(encoder, MixedEncoder) is mixed
    assert isinstance(encoder.queries if mixed else encoder, OrtEncoder)


def test_a_mixed_encoder_takes_queries_from_the_export_and_passages_from_torch_bf16(
    export_dir, store, tmp_path, torch_encoder, real_texts
):
    import numpy as np
    import torch

    from ddr_search.factory import build_encoder
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.model.precision import PassagePrecision

    threads = torch.get_num_threads()
    settings = Settings(home=tmp_path, modules=store, onnx_dir=export_dir, passage_precision="bf16")
    encoder = build_encoder(settings, passage_threads=1)
    try:
        queries = encoder.encode_queries(real_texts, routing="topk")
        expected = encoder.queries.encode_queries(real_texts, routing="topk")
        np.testing.assert_array_equal(queries.vectors, expected.vectors)
        assert queries.weights == expected.weights

        passages = encoder.encode_passages(real_texts)
        assert isinstance(encoder.passages, TorchEncoder)
        assert encoder.passages.passage_precision is PassagePrecision.BF16
        assert torch.get_num_threads() == 1  # a worker's share, set before torch's encoder loaded
        assert encoder.passages.version == encoder.version == torch_encoder.version
        cosines = (passages * torch_encoder.encode_passages(real_texts)).sum(axis=1)
        assert cosines.min() > 0.999
    finally:
        torch.set_num_threads(threads)


def test_a_mixed_encoder_refuses_passages_of_another_version(ort_fp32):
    from ddr_search.mixed_encoder import MixedEncoder
    from ddr_search.model.encoder import TorchEncoder

    frozen = TorchEncoder.load(None)  # the backbone alone; the test store's general module is trained
    assert frozen.version != ort_fp32.version
    encoder = MixedEncoder(ort_fp32, lambda: frozen)
    with pytest.raises(ExportError, match="re-run `ddr-search export`"):
        encoder.encode_passages(["a passage"])


def test_a_mixed_encoder_that_only_searches_never_imports_torch(export_dir, store, tmp_path) -> None:
    code = (
        "import sys\n"
        "from ddr_search.factory import build_encoder\n"
        "from ddr_search.settings import Settings\n"
        f"settings = Settings(home={str(tmp_path)!r}, modules={str(store)!r}, onnx_dir={str(export_dir)!r},"
        " passage_precision='bf16')\n"
        "encoder = build_encoder(settings)\n"
        "encoder.encode_queries(['fraud limitations'])\n"
        "print(type(encoder).__name__, 'torch' in sys.modules)\n"
    )
    assert last_line_of_python(code) == "MixedEncoder False"


def last_line_of_python(code: str) -> str:
    """Run `code` in a fresh interpreter (nothing imported yet) and return the last line it printed."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]
