"""Export a module store to ONNX: passage, per-domain and weighted query encoders, router, tokenizer.

Why the pieces are made the way they are:
- `torch.onnx.export(dynamo=True)`. The TorchScript exporter (dynamo=False) silently produces wrong
  outputs for transformers 5.x BERT (max abs diff 1.8 on hidden states, even with no prefix), so it
  is not an option. The dynamo exporter traces the prefix holder correctly (parity ~2e-7).
- The graph is traced twice only: once with fixed prefixes (the general module as initializers) and
  once with `module_weights` as an input. Every per-domain encoder is the fixed graph with the
  general+domain sums written into the prefix initializers: exact, and one trace instead of N.
- The router is cut out of the weighted graph (which also outputs `router_logits`), so it needs no
  third trace and stays the very same computation.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ddr_search.errors import ExportError
from onnx_export.artifacts import (
    ATTENTION_MASK,
    EMBEDDINGS,
    INPUT_IDS,
    MODULE_WEIGHTS,
    NO_STORE,
    PASSAGE_FILE,
    ROUTER_FILE,
    ROUTER_LOGITS,
    TOKENIZER_DIR,
    WEIGHTED_FILE,
    ExportManifest,
    GraphRecord,
    Precision,
    Role,
    domain_file,
    graph_key,
    sha256_file,
)
from onnx_export.artifacts import MANIFEST as EXPORT_MANIFEST
from onnx_export.graph import expand_logsumexp
from onnx_export.quantize import quantize_int8

if TYPE_CHECKING:
    import numpy as np

    from ddr_search.model.ddr import DDRModel

DEFAULT_OPSET = 18
PREFIX_TENSORS = ("keys", "values", "gates")
_FIXED_ATTR = "model"  # the wrapper attribute: initializer names become "model.general.keys" etc.

Progress = Callable[[str], None]
TEMPLATE_FILE = "prefixed-template.onnx"  # the fixed graph domain modules are baked into; not kept


def _wrappers():
    import torch

    class Fixed(torch.nn.Module):
        """Passage / per-domain encoder: the prefix is whatever `model.general` holds (baked as initializers)."""

        def __init__(self, model: DDRModel) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids, attention_mask)

    class Weighted(torch.nn.Module):
        """Query encoder for top-k / soft / multi-module prior routing; also emits the router logits."""

        def __init__(self, model: DDRModel) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, module_weights: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            embeddings = self.model(input_ids, attention_mask, module_weights)
            logits = self.model.router(self.model.router_features(input_ids, attention_mask))
            return embeddings, logits

    return Fixed, Weighted


def _trace(
    module: object, args: tuple, input_names: list[str], output_names: list[str], path: Path, opset: int
) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=65536)
    seq = torch.export.Dim("sequence", min=1, max=4096)
    shapes: dict[str, dict[int, object]] = {INPUT_IDS: {0: batch, 1: seq}, ATTENTION_MASK: {0: batch, 1: seq}}
    if MODULE_WEIGHTS in input_names:
        shapes[MODULE_WEIGHTS] = {0: batch}
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    # The exporter's chatter: progress prints, axis renames, torchvision ops it cannot register (unused).
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        registration.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                module,
                args,
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=shapes,
                # The exporter's own optimiser folds the prefix gates into other constants, and per-domain
                # baking needs the prefix initializers intact; onnxruntime optimises the graph at load.
                optimize=False,
                verbose=False,
            )
        finally:
            registration.setLevel(level)
    if program is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise ExportError("torch.onnx.export returned no program")
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)
    import onnx

    graph = onnx.load(str(path))
    expand_logsumexp(graph)
    onnx.save(graph, str(path))


def _example_inputs(vocab_size: int):
    import torch

    # Batch 2 and length 8: size-1 dims would be specialised away by torch.export.
    ids = torch.randint(1000, min(2000, vocab_size), (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    return ids, mask


def _template_initializers(model_proto: object, names: list[str]) -> dict[str, object]:
    """The general module's initializers of a fixed graph by tensor name ("keys", "adapter_a.0_query", ...)."""
    wanted = {f"general.{name}": name for name in names}
    found = {}
    for init in model_proto.graph.initializer:
        for suffix, name in wanted.items():
            if init.name.endswith(suffix):
                found[name] = init
    missing = sorted(set(names) - set(found))
    if missing:
        raise ExportError(f"the fixed encoder graph lost its module initializers ({', '.join(missing[:3])} ...)")
    return found


def bake(template: Path, target: Path, tensors: dict[str, np.ndarray]) -> None:
    """Copy a fixed-encoder graph with other module values written into its general-module initializers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(template))
    for name, init in _template_initializers(model, list(tensors)).items():
        array = tensors[name]
        if tuple(init.dims) != array.shape:
            raise ExportError(f"{template}: tensor {name} has shape {tuple(init.dims)}, the module's {array.shape}")
        init.CopyFrom(numpy_helper.from_array(array, init.name))
    onnx.save(model, str(target))


def _extract_router(weighted: Path, target: Path) -> None:
    import onnx
    from onnx.utils import Extractor

    router = Extractor(onnx.load(str(weighted))).extract_model([INPUT_IDS, ATTENTION_MASK], [ROUTER_LOGITS])
    onnx.save(router, str(target))


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    from ddr_search import __version__

    return {
        "ddr-search": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def export_store(
    store: Path | None,
    out: Path,
    *,
    backbone: Path | None = None,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    progress: Progress | None = None,
) -> ExportManifest:
    """Export `store` (None: the frozen backbone) to `out`, replacing any older export atomically.

    Raises ModuleStoreError for a bad store and ExportError when a graph cannot be produced.
    """
    from ddr_search.manifest import read_manifest
    from ddr_search.model.encoder import TorchEncoder
    from ddr_search.routing import PROFILES_DIR

    say = progress or (lambda _message: None)
    out = Path(out)
    _check_target(out)
    say("loading the model")
    encoder = TorchEncoder.load(store, backbone)
    model = encoder.model.eval()
    names = model.module_names
    store_manifest = read_manifest(Path(store)) if store is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        graphs = _export_graphs(model, staging, int8, opset, say)
        say("saving the tokenizer")
        encoder.tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
        tokenizer_files = {p.name: sha256_file(p) for p in sorted((staging / TOKENIZER_DIR).iterdir()) if p.is_file()}
        profiles = {n: r.routing for n, r in (store_manifest.modules if store_manifest else {}).items() if r.routing}
        for name in profiles:
            (staging / PROFILES_DIR).mkdir(exist_ok=True)
            shutil.copyfile(
                Path(store) / PROFILES_DIR / f"{name}.safetensors", staging / PROFILES_DIR / f"{name}.safetensors"
            )
        info = model.backbone_info
        manifest = ExportManifest(
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            versions=_versions(),
            opset=opset,
            store_path=str(Path(store).resolve()) if store is not None else None,
            store_version=store_manifest.store_version() if store_manifest else NO_STORE,
            module_versions={n: r.version for n, r in store_manifest.modules.items()} if store_manifest else {},
            encoder_version=encoder.version,
            backbone={
                "name": info.name,
                "fingerprint": info.fingerprint,
                "hidden_size": info.hidden_size,
                "num_layers": info.num_layers,
                "num_heads": info.num_heads,
                "pooling": str(model.pooling),
                "normalize": int(model.normalize),
            },
            dimension=encoder.dimension,
            max_passage_length=encoder.max_passage_length,
            max_query_length=encoder.max_query_length,
            pad_token=str(encoder.tokenizer.pad_token),
            pad_token_id=int(encoder.tokenizer.pad_token_id),
            module_names=names,
            domains=dict(model.domain_map),
            precisions=[Precision.FP32, Precision.INT8] if int8 else [Precision.FP32],
            graphs={key: _record(staging, *spec) for key, spec in graphs.items()},
            tokenizer_files=tokenizer_files,
            profiles=profiles,
            fusion={n: r.fusion for n, r in (store_manifest.modules if store_manifest else {}).items() if r.fusion},
        )
        (staging / EXPORT_MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


GraphSpec = tuple[str, Role, Precision, "str | None", list[str], list[str]]


def _record(
    root: Path, file: str, role: Role, precision: Precision, module: str | None, inputs, outputs
) -> GraphRecord:
    path = root / file
    return GraphRecord(
        file=file,
        role=role,
        precision=precision,
        module=module,
        inputs=inputs,
        outputs=outputs,
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
    )


def _export_graphs(model: DDRModel, root: Path, int8: bool, opset: int, say: Progress) -> dict[str, GraphSpec]:
    import numpy as np
    import torch

    fixed_io = ([INPUT_IDS, ATTENTION_MASK], [EMBEDDINGS])
    weighted_io = ([INPUT_IDS, ATTENTION_MASK, MODULE_WEIGHTS], [EMBEDDINGS, ROUTER_LOGITS])
    names = model.module_names
    ids, mask = _example_inputs(model.encoder.get_input_embeddings().weight.shape[0])
    fixed_cls, weighted_cls = _wrappers()
    specs: dict[str, GraphSpec] = {}
    fp32 = root / Precision.FP32

    general = model.general
    # Domain modules are baked into a fixed graph that has prefix initializers, even without a general
    # module (a zero-gated zero prefix is an exact no-op), and adapter initializers when the store has
    # adapters (the template's general module carries a zero set; the real one never has any). Passages
    # skip a no-op general module's prefix attention altogether (the backbone's vectors, ~20% less work)
    # and never run adapters, so then they get a graph of their own.
    template_prefix = general if general is not None or not names else model.new_module()
    if model.adapter_rank and names:
        with_adapters = model.new_module(adapters=True)
        with_adapters.load_state_dict(template_prefix.state_dict(), strict=False)
        template_prefix = with_adapters
    model.general = template_prefix
    noop_general = model.general_is_noop()
    separate = noop_general or template_prefix.has_adapters
    template = fp32 / (TEMPLATE_FILE if separate else PASSAGE_FILE)
    try:
        say("exporting the passage encoder")
        if names or not separate:
            _trace(fixed_cls(model), (ids, mask), *fixed_io, template, opset)
        if separate:  # no-op general: no general module at all (the same vectors, decided before tracing)
            model.general = None if noop_general else general
            _trace(fixed_cls(model), (ids, mask), *fixed_io, fp32 / PASSAGE_FILE, opset)
    finally:
        model.general = general
    specs[graph_key(Role.PASSAGE, Precision.FP32)] = (
        f"fp32/{PASSAGE_FILE}",
        Role.PASSAGE,
        Precision.FP32,
        None,
        *fixed_io,
    )

    def baked(name: str) -> dict[str, np.ndarray]:
        """The template's general-module tensors for one domain: general + domain prefix, domain adapters."""
        base = template_prefix
        module = model.domain_modules[name]
        tensors = {
            kind: (getattr(base, kind).detach() + getattr(module, kind).detach()).numpy().astype(np.float32)
            for kind in PREFIX_TENSORS
        }
        for part in ("adapter_a", "adapter_b"):
            for key, value in getattr(module, part).items():
                tensors[f"{part}.{key}"] = value.detach().numpy().astype(np.float32)
        return tensors

    for name in names:
        say(f"baking the query encoder for module {name!r}")
        bake(template, fp32 / domain_file(name), baked(name))
        specs[graph_key(Role.QUERY_DOMAIN, Precision.FP32, name)] = (
            f"fp32/{domain_file(name)}",
            Role.QUERY_DOMAIN,
            Precision.FP32,
            name,
            *fixed_io,
        )

    if template.name == TEMPLATE_FILE:
        template.unlink(missing_ok=True)
    if names:
        say("exporting the weighted query encoder and the router")
        weights = torch.full((ids.shape[0], len(names)), 1.0 / len(names))
        _trace(weighted_cls(model), (ids, mask, weights), *weighted_io, fp32 / WEIGHTED_FILE, opset)
        specs[graph_key(Role.QUERY_WEIGHTED, Precision.FP32)] = (
            f"fp32/{WEIGHTED_FILE}",
            Role.QUERY_WEIGHTED,
            Precision.FP32,
            None,
            *weighted_io,
        )
        _extract_router(fp32 / WEIGHTED_FILE, root / ROUTER_FILE)
        # The router stays fp32 in every export: top-k picks modules by rank, and a quantised
        # router could flip a pick; it is one Gather + mean + a [d x N] matmul, so int8 saves nothing.
        specs[graph_key(Role.ROUTER, None)] = (
            ROUTER_FILE,
            Role.ROUTER,
            Precision.FP32,
            None,
            [INPUT_IDS, ATTENTION_MASK],
            [ROUTER_LOGITS],
        )

    if int8:
        specs.update(_quantize_all(root, specs, say))
    return specs


def _quantize_all(root: Path, specs: dict[str, GraphSpec], say: Progress) -> dict[str, GraphSpec]:
    """An int8 twin of every fp32 encoder (the router stays fp32)."""
    out: dict[str, GraphSpec] = {}
    for file, role, _precision, module, inputs, outputs in list(specs.values()):
        if role is Role.ROUTER:
            continue
        say(f"quantising {file} to int8")
        target = f"{Precision.INT8}/{Path(file).name}"
        quantize_int8(root / file, root / target)
        out[graph_key(role, Precision.INT8, module)] = (target, role, Precision.INT8, module, inputs, outputs)
    return out


def _check_target(out: Path) -> None:
    """Never replace a folder that holds something other than an earlier export."""
    if out.exists() and (not out.is_dir() or (not (out / EXPORT_MANIFEST).exists() and any(out.iterdir()))):
        raise ExportError(f"{out} exists and is not an ONNX export: choose an empty or new --out folder")


def _replace(staging: Path, out: Path) -> None:
    """Swap the finished export in; a reader never sees half an export."""
    from ddr_search.files import replace_directory

    if out.exists():
        _check_target(out)
    replace_directory(staging, out)
