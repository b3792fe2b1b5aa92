"""The DR baseline: full fine-tuning of the backbone on the same pairs, loss and dev split as the DDR
modules (the paper's comparison; `ddr-search train dr` and bench/quality.py)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from ddr_search.model.backbone import Backbone, load_backbone
from ddr_search.model.ddr import DDRModel
from ddr_search.training.api import (
    DEFAULT_PREFIX_LENGTH,
    check_domains,
    domain_task,
    freeze,
    passage_encoder,
    subsample,
    trainable,
)
from ddr_search.training.config import TrainConfig
from ddr_search.training.dual import DualTask
from ddr_search.training.loop import TrainResult, train
from ddr_search.training.pairs import Pair, split_dev
from ddr_search.types import Document


def train_dr(
    pairs: Sequence[Pair], out: Path | None, config: TrainConfig, *, backbone: Path | None = None
) -> tuple[DDRModel, TrainResult]:
    """Full fine-tuning of the shared backbone (queries and passages), the paper's "DR" baseline.

    Writes a complete model folder usable as `--backbone` when `out` is given.
    """
    loaded = load_backbone(backbone)
    model = DDRModel(loaded, DEFAULT_PREFIX_LENGTH)
    train_pairs, dev_pairs = split_dev(pairs, config.dev_fraction, config.seed)
    train_pairs = subsample(train_pairs, config.max_examples, config.seed)
    groups = [{"name": "backbone", "params": trainable(model.encoder), "lr": config.lr_for("backbone")}]
    result = train(DualTask(model, loaded.tokenizer, train_pairs, dev_pairs, groups, config), config)
    freeze(model)
    if out is not None:
        save_backbone(model, loaded, Path(out))
    return model, result


def save_backbone(model: DDRModel, loaded: Backbone, out: Path) -> None:
    """Copy the backbone folder and overwrite its weights with the fine-tuned ones."""
    from safetensors.torch import save_file

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(loaded.path, out, ignore=shutil.ignore_patterns("*.bin", "*.onnx", "onnx", "openvino", "*.h5"))
    state = {k: v.detach().contiguous().clone() for k, v in model.encoder.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


def train_dr_cached(
    pairs: Sequence[Pair],
    config: TrainConfig,
    *,
    corpora: Mapping[str, Sequence[Document]] | None = None,
    dev: Sequence[Pair] | None = None,
    backbone: Path | None = None,
    cache_dir: Path | None = None,
    passage_lengths: Mapping[str, int] | None = None,
) -> tuple[DDRModel, TrainResult]:
    """DR on the query side: every backbone weight of the query tower trains, against the same cached
    frozen passage embeddings, pairs, loss and dev split as the DDR modules (so the comparison isolates
    "full fine-tuning vs a 0.65% prefix"). Returns the fine-tuned query model (passages stay frozen)."""
    check_domains(pairs)
    frozen = load_backbone(backbone)
    passages = passage_encoder(DDRModel(frozen, DEFAULT_PREFIX_LENGTH), frozen)
    loaded = load_backbone(backbone)
    model = DDRModel(loaded, DEFAULT_PREFIX_LENGTH).eval()
    groups = [{"name": "backbone", "params": trainable(model.encoder), "lr": config.lr_for("backbone")}]
    task, _ = domain_task(
        model,
        loaded,
        pairs,
        corpora or {},
        config,
        cache_dir,
        groups,
        dev=dev,
        passages=passages,
        routed=False,
        passage_lengths=passage_lengths,
    )
    result = train(task, config)
    freeze(model)
    return model, result
