"""The small real task the training tests share: a fresh module `sci` learning SciFact pseudo-queries against
the cached passages of a few real abstracts (every query scored against all of them)."""

from __future__ import annotations

from collections.abc import Sequence

from ddr_search.model.ddr import DDRModel
from ddr_search.model.encoder import TorchEncoder, passage_text
from ddr_search.training.api import keep_queries
from ddr_search.training.cached import CachedExample, CachedQueryTask
from ddr_search.training.config import TrainConfig
from ddr_search.training.selfsup import pairs_from_corpus
from ddr_search.types import Document


def sci_task(
    backbone, docs: Sequence[Document], config: TrainConfig, keep: Sequence[str] | None = None
) -> tuple[DDRModel, CachedQueryTask]:
    """(model, task); the first 8 pseudo-queries are dev. `keep`: queries for the keep loss (`config.keep_weight`)."""
    model = DDRModel(backbone, prefix_length=4).eval()
    model.add_general()  # an exact no-op: domain deltas act on its keys/values
    model.add_domain_module("sci")
    encoder = TorchEncoder(model, backbone.tokenizer, max_passage_length=64)
    matrix = encoder.encode_passages([passage_text(d.title, d.text) for d in docs])
    rows = {d.id: i for i, d in enumerate(docs)}
    pairs = pairs_from_corpus(docs, domain="sci", seed=0)
    examples = [CachedExample(p.query, "sci", (rows[p.positives[0].id],)) for p in pairs]
    params = list(model.domain_modules["sci"].parameters())
    for p in params:
        p.requires_grad_(True)
    groups = [{"name": "domain:sci", "params": params, "lr": config.lr_for("domain")}]
    kept = keep_queries(model, backbone, keep, config) if keep else None
    task = CachedQueryTask(
        model, backbone.tokenizer, {"sci": matrix}, examples[8:], examples[:8], groups, config, keep=kept
    )
    return model, task
