"""Training where passages pass through the trained weights too: phase 1 (general module) and DR.

Both sides go through the model, so there is no cache: InfoNCE over in-batch + sampled hard
negatives, every known positive of a query masked out of its negatives.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

from ddr_search.batching import by_length
from ddr_search.model.ddr import DDRModel
from ddr_search.model.encoder import passage_text
from ddr_search.training.config import TrainConfig
from ddr_search.training.devmetric import ndcg_at_10
from ddr_search.training.losses import LOSSES
from ddr_search.training.pairs import Pair, Passage


def _text(p: Passage) -> str:
    return passage_text(p.title, p.text)


class DualTask:
    def __init__(
        self,
        model: DDRModel,
        tokenizer: Callable[..., dict[str, torch.Tensor]],
        train: Sequence[Pair],
        dev: Sequence[Pair],
        groups: list[dict[str, object]],
        config: TrainConfig,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.train_pairs = list(train)
        self.dev_pairs = list(dev)
        self.groups = groups
        self.config = config

    def param_groups(self) -> list[dict[str, object]]:
        return self.groups

    def num_examples(self) -> int:
        return len(self.train_pairs)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {f"{g['name']}.{i}": p.detach() for g in self.groups for i, p in enumerate(g["params"])}

    @torch.no_grad()
    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        for g in self.groups:
            for i, p in enumerate(g["params"]):
                p.copy_(state[f"{g['name']}.{i}"])

    def _encode(self, texts: list[str], max_length: int) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return self.model(batch["input_ids"], batch["attention_mask"], None)

    def loss(self, indices: list[int]) -> torch.Tensor:
        pairs = [self.train_pairs[i] for i in indices]
        # Deterministic per batch (resume-safe): the sample depends only on the seed and the indices.
        rng = random.Random(hash((self.config.seed, tuple(indices))) & 0xFFFFFFFF)
        keys: dict[str, int] = {}
        texts: list[str] = []

        def add(p: Passage) -> None:
            if p.key() not in keys:
                keys[p.key()] = len(texts)
                texts.append(_text(p))

        for pair in pairs:
            add(rng.choice(pair.positives))
            negatives = list(pair.negatives)
            rng.shuffle(negatives)
            for negative in negatives[: self.config.hard_negatives]:
                add(negative)
        mask = torch.zeros(len(pairs), len(texts), dtype=torch.bool)
        for row, pair in enumerate(pairs):
            for p in pair.positives:
                if p.key() in keys:
                    mask[row, keys[p.key()]] = True
        queries = self._encode([p.query for p in pairs], self.config.max_query_length)
        passages = self._encode(texts, self.config.max_passage_length)
        return LOSSES[self.config.loss](queries, passages, mask, self.config.temperature)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Dev nDCG@10: dev queries against the pool of every dev passage (positives + negatives)."""
        if not self.dev_pairs:
            return 0.0
        keys: dict[str, int] = {}
        texts: list[str] = []
        for pair in self.dev_pairs:
            for p in (*pair.positives, *pair.negatives):
                if p.key() not in keys:
                    keys[p.key()] = len(texts)
                    texts.append(_text(p))
        pool = torch.zeros(len(texts), self.model.backbone_info.hidden_size)
        for rows, chunk in by_length(texts, 64):
            pool[rows] = self._encode(chunk, self.config.max_passage_length)
        queries = torch.cat(
            [
                self._encode([p.query for p in self.dev_pairs[i : i + 64]], self.config.max_query_length)
                for i in range(0, len(self.dev_pairs), 64)
            ]
        )
        positives = [[keys[p.key()] for p in pair.positives] for pair in self.dev_pairs]
        return ndcg_at_10((queries @ pool.T).numpy(), positives)
