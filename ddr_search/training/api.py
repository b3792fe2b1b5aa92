"""The training entry points the CLI and the benchmark call: one function per phase.

train_general  phase 1: the general module alone (both sides pass through it)
train_domains  phase 2: domain modules + router jointly, general frozen, passages cached
train_domain   add one domain later: only its module (and router row) trains; asserts that every
               other module, the router's other rows and the passage encoder stay bit-identical
(the DR baseline, full fine-tuning of the backbone on the same pairs, is in training/dr.py)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ddr_search.errors import InputError
from ddr_search.model.adapters import DEFAULT_ADAPTER_RANK
from ddr_search.model.backbone import Backbone, load_backbone
from ddr_search.model.ddr import GENERAL, DDRModel
from ddr_search.model.encoder import TorchEncoder, passage_text
from ddr_search.model.store import load_store, module_tensors, save_store
from ddr_search.routing import calibrate, profile_rows
from ddr_search.training.cached import CachedExample, CachedQueryTask, KeepQueries
from ddr_search.training.config import TrainConfig
from ddr_search.training.dual import DualTask
from ddr_search.training.loop import TrainResult, train, train_averaged
from ddr_search.training.pairs import Pair, split_dev
from ddr_search.training.passages import encode_cached
from ddr_search.training.selfsup import LABEL_FREE_BUDGET, LabelFreeBudget, documents_within, label_free_pairs
from ddr_search.types import Document, RoutingMode

log = logging.getLogger(__name__)
DEFAULT_PREFIX_LENGTH = 32  # 147,456 parameters (0.65% of MiniLM); trains well on CPU (docs/architecture.md section 5)


@dataclass
class Candidates:
    """One domain's cached passage matrix and how pair passages map onto its rows."""

    matrix: np.ndarray
    rows: dict[str, int]  # Passage.key() -> row
    texts: list[str]  # row -> the passage text (BM25 over the same rows tunes the hybrid fusion)


def subsample(pairs: Sequence[Pair], limit: int | None, seed: int) -> list[Pair]:
    pairs = list(pairs)
    if limit is None or len(pairs) <= limit:
        return pairs
    return random.Random(seed).sample(pairs, limit)


def _model(
    store: Path | None, backbone: Backbone, prefix_length: int | None, adapter_rank: int | None = None
) -> DDRModel:
    """The store's model, or a new one (prefix length and adapter rank: the defaults unless given)."""
    if store is not None and (Path(store) / "manifest.json").exists():
        model = load_store(Path(store), backbone, prefix_length)
    else:
        rank = DEFAULT_ADAPTER_RANK if adapter_rank is None else adapter_rank
        model = DDRModel(backbone, prefix_length or DEFAULT_PREFIX_LENGTH, rank)
    return model.eval()  # no dropout: training is deterministic and matches inference


def trainable(module: torch.nn.Module | Sequence[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    params = list(module.parameters() if isinstance(module, torch.nn.Module) else module)
    for p in params:
        p.requires_grad_(True)
    return params


def module_groups(model: DDRModel, name: str, config: TrainConfig, *, adapters: bool = True) -> list[dict[str, object]]:
    """A domain module's optimizer groups: its prefix ("domain:NAME", lr domain) and, where the store has
    them and `adapters`, its query adapters ("adapter:NAME", lr adapter: a 40x smaller step, as they act
    on every linear layer rather than on extra attention targets)."""
    module = model.domain_modules[name]
    groups: list[dict[str, object]] = [
        {"name": f"domain:{name}", "params": trainable(module.prefix_parameters()), "lr": config.lr_for("domain", name)}
    ]
    if adapters and module.has_adapters:
        params = trainable(module.adapter_parameters())
        groups.append({"name": f"adapter:{name}", "params": params, "lr": config.lr_for("adapter", name)})
    return groups


def passage_encoder(
    model: DDRModel, backbone: Backbone, max_length: int | None = None, *, show_progress: bool = True
) -> TorchEncoder:
    return TorchEncoder(
        model, backbone.tokenizer, max_passage_length=max_length or backbone.max_seq_length, show_progress=show_progress
    )


def build_candidates(
    encoder: TorchEncoder, pairs: Sequence[Pair], docs: Sequence[Document] | None, cache_dir: Path | None
) -> Candidates:
    """The corpus (if given) plus every pair passage not already in it, encoded once and cached."""
    rows: dict[str, int] = {}
    texts: list[str] = []
    ids: list[str] = []
    for doc in docs or ():
        rows[f"id:{doc.id}"] = len(texts)
        texts.append(passage_text(doc.title, doc.text))
        ids.append(doc.id)
    corpus_texts = len(texts)
    for pair in pairs:
        for p in (*pair.positives, *pair.negatives):
            if p.key() not in rows:
                rows[p.key()] = len(texts)
                texts.append(passage_text(p.title, p.text))
    parts = []
    if corpus_texts:
        parts.append(
            encode_cached(encoder, texts[:corpus_texts], cache_dir, ids=ids, show_progress=encoder.show_progress)
        )
    if len(texts) > corpus_texts:
        parts.append(encode_cached(encoder, texts[corpus_texts:], cache_dir, show_progress=encoder.show_progress))
    return Candidates(np.concatenate(parts) if len(parts) > 1 else parts[0], rows, texts)


def _examples(pairs: Sequence[Pair], candidates: Mapping[str, Candidates]) -> list[CachedExample]:
    out = []
    for pair in pairs:
        table = candidates[pair.domain or ""].rows
        out.append(CachedExample(pair.query, pair.domain or "", tuple(table[p.key()] for p in pair.positives)))
    return out


def _probe_passages(encoder: TorchEncoder, candidates: Mapping[str, Candidates]) -> np.ndarray:
    return encoder.encode_passages(
        ["a probe passage for the passage-encoder invariant", "Vitamin D and bone fractures in older adults."]
    )


# -- phase 1 ------------------------------------------------------------------------------------------
def train_general(
    pairs: Sequence[Pair],
    out: Path,
    config: TrainConfig,
    *,
    store: Path | None = None,
    backbone: Path | None = None,
    prefix_length: int | None = None,
    adapter_rank: int | None = None,
) -> tuple[DDRModel, TrainResult]:
    """Phase 1: the general module alone. Keeps the exact no-op unless dev improves by > min_delta
    (a new general module changes every passage embedding, so it must earn the re-indexing).
    `prefix_length` / `adapter_rank`: for a new store (default 32 / 8)."""
    loaded = load_backbone(backbone)
    model = _model(store, loaded, prefix_length, adapter_rank)
    if model.general is None:
        model.add_general(seed=config.seed)
    train_pairs, dev_pairs = split_dev(pairs, config.dev_fraction, config.seed)
    train_pairs = subsample(train_pairs, config.max_examples, config.seed)
    groups = [{"name": GENERAL, "params": trainable(model.general), "lr": config.lr_for("general")}]
    result = train(DualTask(model, loaded.tokenizer, train_pairs, dev_pairs, groups, config), config)
    freeze(model)
    notes = {**config.to_notes(), **result.notes(), "train_pairs": len(train_pairs), "dev_pairs": len(dev_pairs)}
    save_store(model, out, notes={GENERAL: notes})
    return model, result


# -- phase 2 ------------------------------------------------------------------------------------------
def domain_task(
    model: DDRModel,
    loaded: Backbone,
    pairs: Sequence[Pair],
    corpora: Mapping[str, Sequence[Document]],
    config: TrainConfig,
    cache_dir: Path | None,
    groups: list[dict[str, object]],
    router_rows: Sequence[int] | None = None,
    *,
    dev: Sequence[Pair] | None = None,
    passages: TorchEncoder | None = None,
    routed: bool = True,
    passage_lengths: Mapping[str, int] | None = None,
    keep: KeepQueries | None = None,
) -> tuple[CachedQueryTask, dict[str, int]]:
    """Candidates per domain (corpus + pair passages, cached) and the train/dev examples.

    `dev`: held-out pairs (e.g. a BEIR dev split) for the domains they cover; other domains hold out
    `config.dev_fraction` of their queries. `passages`: the passage encoder (default: this model's).
    `passage_lengths`: per-domain passage token limit (default: the backbone's, as indexing uses).
    `keep`: queries of other domains for the keep loss (`config.keep_weight`).
    """
    encoder = passages or passage_encoder(model, loaded, show_progress=config.show_progress)
    dev = list(dev or [])
    domains = sorted({p.domain or "" for p in pairs})

    def encoder_for(domain: str) -> TorchEncoder:
        if passage_lengths and domain in passage_lengths:
            return TorchEncoder(
                encoder.model,
                encoder.tokenizer,
                max_passage_length=passage_lengths[domain],
                show_progress=encoder.show_progress,
            )
        return encoder

    candidates = {
        d: build_candidates(encoder_for(d), [p for p in (*pairs, *dev) if p.domain == d], corpora.get(d), cache_dir)
        for d in domains
    }
    train_pairs: list[Pair] = []
    dev_pairs: list[Pair] = []
    for d in domains:
        given = [p for p in dev if p.domain == d]
        mine = [p for p in pairs if p.domain == d]
        t, v = (mine, given) if given else split_dev(mine, config.dev_fraction, config.seed)
        train_pairs += subsample(t, config.max_examples, config.seed)
        dev_pairs += v
    task = CachedQueryTask(
        model,
        loaded.tokenizer,
        {d: c.matrix for d, c in candidates.items()},
        _examples(train_pairs, candidates),
        _examples(dev_pairs, candidates),
        groups,
        config,
        router_rows=router_rows,
        routed=routed,
        texts={d: c.texts for d, c in candidates.items()},
        keep=keep,
    )
    return task, {"train_pairs": len(train_pairs), "dev_pairs": len(dev_pairs)}


def keep_queries(model: DDRModel, backbone: Backbone, texts: Sequence[str], config: TrainConfig) -> KeepQueries:
    """The keep loss's queries with their general-module vectors (unit rows), encoded before training."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise InputError("the keep queries are empty")
    encoder = TorchEncoder(model, backbone.tokenizer, max_query_length=config.max_query_length)
    vectors = encoder.encode_queries(texts, routing=RoutingMode.NONE).vectors
    return KeepQueries(texts, vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))


def check_domains(pairs: Sequence[Pair]) -> None:
    for i, pair in enumerate(pairs):
        if pair.domain is None:
            raise InputError(
                "every pair needs a domain for domain training (or pass --domain)", line=i + 1, field="domain"
            )


def freeze(model: DDRModel) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def attach_profile(
    model: DDRModel, backbone: Backbone, module: str, queries: Sequence[str], config: TrainConfig
) -> None:
    """Auto routing's profile for `module`, from its own training queries' general-module vectors
    (ddr_search.routing): nothing of any other module goes into it, so domains stay independent."""
    encoder = TorchEncoder(model, backbone.tokenizer, max_query_length=config.max_query_length)
    unique = list(dict.fromkeys(queries))
    kept = [unique[i] for i in profile_rows(len(unique), seed=config.seed)]  # only what the profile keeps
    vectors = encoder.encode_queries(kept, routing=RoutingMode.NONE).vectors
    model.profiles[module] = calibrate(
        module, vectors, quantile=config.routing_quantile, seed=config.seed, background=model.routing_background
    )


def attach_fusion(model: DDRModel, task: CachedQueryTask, module: str) -> None:
    """Hybrid weights for `module`, chosen on its dev queries (BM25 and the routed dense encoder over the
    same candidate passages): what search uses for every query routed to it."""
    from ddr_search.evaluation.tuning import choose_fusion

    bm25, dense, qrels = task.dev_runs(module)
    if qrels:
        model.fusion[module], scores = choose_fusion(bm25, dense, qrels)
        log.info("fusion for %s: %s (dev nDCG@10 by dense weight: %s)", module, model.fusion[module], scores)


def train_domains(
    pairs: Sequence[Pair],
    store: Path | None,
    out: Path,
    config: TrainConfig,
    *,
    corpora: Mapping[str, Sequence[Document]] | None = None,
    dev: Sequence[Pair] | None = None,
    backbone: Path | None = None,
    prefix_length: int | None = None,
    cache_dir: Path | None = None,
    passage_lengths: Mapping[str, int] | None = None,
) -> tuple[DDRModel, TrainResult]:
    """Phase 2: every domain named in `pairs` gets a module (new ones start as exact no-ops); those
    modules and the router train jointly, the general module frozen so passages are cached."""
    check_domains(pairs)
    loaded = load_backbone(backbone)
    model = _model(store, loaded, prefix_length)
    domains = sorted({p.domain for p in pairs if p.domain})
    for d in domains:
        if d not in model.domain_map:
            model.add_domain_module(d)
    version = passage_encoder(model, loaded).version
    modules = sorted({m for d in domains for m in model.domain_map[d]})
    groups = [group for m in modules for group in module_groups(model, m, config)]
    rows = [model.module_names.index(m) for m in modules]
    groups.append({"name": "router", "params": trainable(model.router), "lr": config.lr_for("router")})
    task, counts = domain_task(
        model, loaded, pairs, corpora or {}, config, cache_dir, groups, rows, dev=dev, passage_lengths=passage_lengths
    )
    result = train(task, config)
    freeze(model)
    if passage_encoder(model, loaded).version != version:
        raise AssertionError("phase 2 changed the passage encoder")
    for d in domains:
        if model.domain_map[d] == [d]:
            attach_profile(model, loaded, d, [p.query for p in pairs if p.domain == d], config)
            attach_fusion(model, task, d)
    notes = {}
    for m in modules:
        own = next((p for d, p in result.part_best.items() if model.domain_map.get(d) == [m]), None)
        extra = {"dev_after": round(own["dev"], 4), "best_step": own["step"]} if own else {}
        notes[m] = {**config.to_notes(), **result.notes(), **counts, "domains": ",".join(domains), **extra}
    save_store(model, out, notes=notes)
    return model, result


def train_domain(
    name: str,
    store: Path | None,
    out: Path,
    config: TrainConfig,
    *,
    pairs: Sequence[Pair] | None = None,
    corpus: Sequence[Document] | None = None,
    backbone: Path | None = None,
    prefix_length: int | None = None,
    cache_dir: Path | None = None,
    passage_length: int | None = None,
    dev: Sequence[Pair] | None = None,
    budget: LabelFreeBudget = LABEL_FREE_BUDGET,
    keep: Sequence[str] | None = None,
) -> tuple[DDRModel, TrainResult]:
    """Add one domain: labelled pairs, or self-supervised pairs from `corpus` when no pairs are given.

    `dev`: held-out pairs for early stopping (default: `config.dev_fraction` of the pairs).
    `keep`: queries of other domains (or of none) the module should leave as the general module encodes
    them, weighted by `config.keep_weight` (docs/training.md: the keep loss; required when it is > 0).
    `budget`: how much a label-free module trains on (selfsup.LabelFreeBudget); its fusion stays the
    general default, as its dev queries are pseudo-queries.

    Only the new module and its router row train. Asserts afterwards that every other module, the
    other router rows and the passage embeddings are bit-identical to before.
    """
    started = time.perf_counter()
    if pairs is None and corpus is None:
        raise InputError(f"domain {name!r}: give pairs or a corpus")
    loaded = load_backbone(backbone)
    model = _model(store, loaded, prefix_length)
    if name in model.domain_modules:
        raise InputError(f"module {name!r} already exists in {store}; pick a new name or retrain with train domains")
    if config.keep_weight > 0 and not keep:
        raise InputError(f"domain {name!r}: keep_weight {config.keep_weight} needs keep queries (--keep-queries)")
    keeping = keep_queries(model, loaded, keep, config) if keep and config.keep_weight > 0 else None
    label_free = pairs is None
    if label_free:
        passage_length = passage_length or budget.passage_tokens
        if budget.seconds is not None:
            encode = passage_encoder(model, loaded, passage_length, show_progress=False).encode_passages
            corpus = documents_within(corpus, encode, budget.seconds * budget.encoding_share, seed=config.seed)
        pairs, dev = label_free_pairs(corpus, name, budget, dev_fraction=config.dev_fraction, seed=config.seed)
        steps = config.max_steps or budget.steps(config.batch_size * config.accumulation)
        default_rate = config.lr["domain"] == TrainConfig().lr["domain"]
        config = replace(
            config,
            max_query_length=min(config.max_query_length, budget.query_tokens),
            max_steps=steps,
            evaluations=config.evaluations or budget.evaluations,
            lr={**config.lr, "domain": budget.lr} if default_rate else config.lr,
        )
    pairs = [Pair(p.query, p.positives, p.negatives, name, p.query_id) for p in pairs]
    before = {n: module_tensors(m) for n, m in model.domain_modules.items()}
    if model.general is not None:
        before[GENERAL] = module_tensors(model.general)
    router_before = model.router.weight.detach().clone()
    encoder = passage_encoder(model, loaded, show_progress=config.show_progress)
    version, probe = encoder.version, _probe_passages(encoder, {})
    model.add_domain_module(name)
    row = model.module_names.index(name)
    # A label-free module trains its prefix only: pseudo-queries are the corpus's own sentences, and
    # adapters on every layer would learn them, not the queries users ask (its adapters stay a no-op).
    groups = module_groups(model, name, config, adapters=not label_free)
    task, counts = domain_task(
        model,
        loaded,
        pairs,
        {name: corpus} if corpus else {},
        config,
        cache_dir,
        groups,
        [row],
        dev=[Pair(p.query, p.positives, p.negatives, name, p.query_id) for p in dev or ()],
        passage_lengths={name: passage_length} if passage_length else None,
        keep=keeping,
    )
    if label_free and budget.seconds is not None:
        left = budget.seconds - budget.closing_seconds - (time.perf_counter() - started)
        config = replace(config, max_seconds=max(0.0, left))
    result = train_averaged(task, config)
    freeze(model)
    _assert_unchanged(model, before, router_before, row, encoder, version, probe)
    attach_profile(model, loaded, name, [p.query for p in (*pairs, *(dev or ()))], config)
    if not label_free:  # pseudo-queries are the corpus's own words: BM25 would win them all
        attach_fusion(model, task, name)
    notes = {**config.to_notes(), **result.notes(), **counts, "label_free": int(label_free)}
    if keeping is not None:
        notes["keep_queries"] = len(keeping.texts)
    if label_free:
        notes["corpus_documents"] = len(corpus)  # what it trained on: a sample where the time budget binds
    save_store(model, out, notes={name: notes})
    return model, result


def _assert_unchanged(
    model: DDRModel,
    before: dict[str, dict[str, torch.Tensor]],
    router_before: torch.Tensor,
    new_row: int,
    encoder: TorchEncoder,
    version: str,
    probe: np.ndarray,
) -> None:
    for name, tensors in before.items():
        module = model.general if name == GENERAL else model.domain_modules[name]
        for key, value in module_tensors(module).items():
            if not torch.equal(value, tensors[key]):
                raise AssertionError(f"adding a domain changed module {name!r} ({key})")
    others = [i for i in range(model.router.weight.shape[0]) if i != new_row]
    if not torch.equal(model.router.weight[others], router_before):
        raise AssertionError("adding a domain changed another module's router row")
    if encoder.version != version or not np.array_equal(_probe_passages(encoder, {}), probe):
        raise AssertionError("adding a domain changed the passage encoder")
