"""Query-side training against cached passage embeddings (phase 2, new domains, label-free, DR-query).

The general module is frozen here, so passage embeddings never change: each corpus is encoded once,
and every query is scored against its *whole* domain corpus (full-corpus negatives, docs/architecture.md section 5).
Queries are encoded with prior routing (their own domain's modules); the router learns jointly
from a cross-entropy on the same queries' domains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ddr_search.model.ddr import DDRModel
from ddr_search.training.config import TrainConfig
from ddr_search.training.devmetric import ndcg_at_10
from ddr_search.training.losses import LOSSES
from ddr_search.types import RoutingMode


@dataclass(frozen=True)
class KeepQueries:
    """Queries of other domains (or of none) and their general-module vectors (unit rows): the keep loss asks
    the module being trained to leave them where the general module puts them, so a foreign query that
    routing lets through costs little (docs/training.md: the keep loss)."""

    texts: Sequence[str]
    vectors: np.ndarray  # [len(texts), dim]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.vectors) or not len(self.texts):
            raise ValueError(f"keep queries: {len(self.texts)} texts and {len(self.vectors)} vectors")


@dataclass(frozen=True, slots=True)
class CachedExample:
    query: str
    domain: str  # key into the candidate matrices (and the model's domain map, for routing)
    positives: tuple[int, ...]  # rows of that domain's candidate matrix


class CachedQueryTask:
    """Trains `groups` (domain modules, router rows, or a whole query-side backbone for DR)."""

    def __init__(
        self,
        model: DDRModel,
        tokenizer: Callable[..., dict[str, torch.Tensor]],
        candidates: dict[str, np.ndarray],
        train: Sequence[CachedExample],
        dev: Sequence[CachedExample],
        groups: list[dict[str, object]],
        config: TrainConfig,
        *,
        routed: bool = True,
        router_rows: Sequence[int] | None = None,
        texts: Mapping[str, Sequence[str]] | None = None,
        keep: KeepQueries | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.candidates = {
            d: torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32)) for d, m in candidates.items()
        }
        self.texts = {d: list(t) for d, t in (texts or {}).items()}
        self.train_examples = list(train)
        self.dev_examples = list(dev)
        self.groups = groups
        self.config = config
        self.routed = routed and len(model.module_names) > 0
        self.router_rows = list(router_rows) if router_rows is not None else None
        self.router_trains = any(g["name"] == "router" for g in groups)
        self.last_parts: dict[str, float] = {}
        self.keep = keep if config.keep_weight > 0 else None
        if self.keep is not None:
            self.keep_targets = torch.from_numpy(np.ascontiguousarray(self.keep.vectors, dtype=np.float32))
            self.keep_draws = np.random.default_rng(config.seed + 1)  # one stream for every run of the task
        if self.router_trains and self.router_rows is not None:
            trained_rows = torch.zeros(model.router.weight.shape[0], 1)
            trained_rows[self.router_rows] = 1.0
            model.router.weight.register_hook(lambda grad: grad * trained_rows)

    def part_keys(self) -> dict[str, list[str]]:
        """Each domain's own module tensors: under prior routing they never affect another domain,
        so each keeps the step where *its* dev score was best. Only when every module serves one domain."""
        if not self.routed:
            return {}
        parts: dict[str, list[str]] = {}
        for domain in sorted({e.domain for e in self.dev_examples}):
            modules = self.model.domain_map.get(domain, [])
            names = [f"{kind}:{m}" for m in modules for kind in ("domain", "adapter")]
            if len(modules) != 1 or any(len(self.model.domain_map.get(d, [])) > 1 for d in self.model.domain_map):
                return {}
            parts[domain] = [
                f"{g['name']}.{i}" for g in self.groups if g["name"] in names for i in range(len(g["params"]))
            ]
        return {d: k for d, k in parts.items() if k} if len(parts) > 1 else {}

    # -- Task protocol ---------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, object]]:
        return self.groups

    def num_examples(self) -> int:
        return len(self.train_examples)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = {}
        for group in self.groups:
            for i, p in enumerate(group["params"]):
                state[f"{group['name']}.{i}"] = p.detach()
        return state

    @torch.no_grad()
    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        for group in self.groups:
            for i, p in enumerate(group["params"]):
                p.copy_(state[f"{group['name']}.{i}"])

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.config.max_query_length, return_tensors="pt"
        )

    def encode(self, examples: Sequence[CachedExample]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Query vectors under prior routing, and the router logits (for its loss)."""
        batch = self._tokens([e.query for e in examples])
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if not self.routed:
            return self.model(ids, mask, None), None
        weights = self.model.route(ids, mask, RoutingMode.PRIOR, domains=[e.domain for e in examples])
        logits = self.model.router(self.model.router_features(ids, mask)) if self.router_trains else None
        return self.model(ids, mask, weights), logits

    def encode_by_length(self, examples: Sequence[CachedExample]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`encode`, run as a shorter and a longer half (each padded to its own longest query), rows back in
        order: the same vectors and gradients with less padding. Pseudo-queries run from 3 to 32 tokens,
        and one long query pads a whole batch: on two AVX2 cores a step of 32 took 1.0 s this way against
        1.2 s in one piece (quarters 1.1 s: smaller matrix products cost more than the padding saved)."""
        if len(examples) < 2:
            return self.encode(examples)
        lengths = self._tokens([e.query for e in examples])["attention_mask"].sum(dim=1).tolist()
        order = sorted(range(len(examples)), key=lengths.__getitem__)
        half = len(order) // 2
        parts = [self.encode([examples[i] for i in rows]) for rows in (order[:half], order[half:])]
        back = torch.argsort(torch.tensor(order))
        vectors = torch.cat([v for v, _ in parts])[back]
        logits = None if parts[0][1] is None else torch.cat([g for _, g in parts])[back]
        return vectors, logits

    def loss(self, indices: list[int]) -> torch.Tensor:
        examples = [self.train_examples[i] for i in indices]
        vectors, logits = self.encode_by_length(examples)
        total = vectors.new_zeros(())
        for domain in sorted({e.domain for e in examples}):
            rows = [i for i, e in enumerate(examples) if e.domain == domain]
            matrix = self.candidates[domain]
            mask = torch.zeros(len(rows), matrix.shape[0], dtype=torch.bool)
            for r, i in enumerate(rows):
                mask[r, list(examples[i].positives)] = True
            part = LOSSES[self.config.loss](vectors[rows], matrix, mask, self.config.temperature)
            total = total + part * len(rows) / len(examples)
        if logits is not None and self.config.router_loss_weight > 0 and logits.shape[1] > 1:
            names = self.model.module_names
            targets = torch.tensor([names.index(self.model.domain_map[e.domain][0]) for e in examples])
            total = total + self.config.router_loss_weight * torch.nn.functional.cross_entropy(logits, targets)
        if self.keep is not None:
            total = total + self.config.keep_weight * self.keep_loss(examples[0].domain)
        return total

    def keep_loss(self, domain: str) -> torch.Tensor:
        """Mean cosine distance between `config.keep_batch` keep queries encoded as `domain`'s queries and
        their general-module vectors: zero while the module leaves them alone."""
        count = min(self.config.keep_batch, len(self.keep_targets))
        rows = self.keep_draws.choice(len(self.keep_targets), count, replace=False)
        examples = [CachedExample(self.keep.texts[i], domain, ()) for i in rows]
        vectors = torch.nn.functional.normalize(self.encode_by_length(examples)[0], dim=-1)
        return (1 - (vectors * self.keep_targets[rows]).sum(-1)).mean()

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean dev nDCG@10 over domains, each dev query ranked against its whole domain corpus."""
        if not self.dev_examples:
            return 0.0
        scores = []
        for domain in sorted({e.domain for e in self.dev_examples}):
            examples = [e for e in self.dev_examples if e.domain == domain]
            vectors = torch.cat([self.encode(examples[i : i + 64])[0] for i in range(0, len(examples), 64)])
            matrix = (vectors @ self.candidates[domain].T).numpy()
            scores.append(ndcg_at_10(matrix, [e.positives for e in examples]))
            self.last_parts[domain] = scores[-1]
        return float(np.mean(scores))

    @torch.no_grad()
    def dev_runs(self, domain: str, depth: int = 100) -> tuple[dict, dict, dict]:
        """(BM25 runs, dense runs, qrels) of `domain`'s dev queries over its candidate passages (rows as ids)."""
        from ddr_search.retrieval.bm25 import BM25Index

        examples = [e for e in self.dev_examples if e.domain == domain]
        if not examples or domain not in self.texts:
            return {}, {}, {}
        texts = self.texts[domain]
        index = BM25Index.build([str(i) for i in range(len(texts))], texts)
        vectors = torch.cat([self.encode(examples[i : i + 64])[0] for i in range(0, len(examples), 64)])
        scores = vectors @ self.candidates[domain].T
        top = torch.topk(scores, min(depth, scores.shape[1]), dim=1)
        dense, bm25, qrels = {}, {}, {}
        for n, (example, values, rows) in enumerate(zip(examples, top.values, top.indices, strict=True)):
            key = f"q{n}"
            dense[key] = [(str(int(r)), float(v)) for r, v in zip(rows, values, strict=True)]
            bm25[key] = index.search(example.query, depth)
            qrels[key] = {str(p): 1 for p in example.positives}
        return bm25, dense, qrels
