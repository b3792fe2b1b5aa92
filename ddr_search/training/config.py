"""Training settings shared by every phase (one dataclass, saved into checkpoints and module notes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ddr_search.routing import DEFAULT_QUANTILE


@dataclass
class TrainConfig:
    """Defaults follow docs/architecture.md section 5: temperature 0.05 for normalised embeddings, AdamW, batch 32."""

    epochs: int = 5
    batch_size: int = 32
    accumulation: int = 1  # optimizer step every `accumulation` batches
    temperature: float = 0.05
    loss: str = "listwise"  # or "multi_positive" (losses.LOSSES): they differ only for several positives
    lr: dict[str, float] = field(
        default_factory=lambda: {"general": 1e-3, "domain": 5e-3, "adapter": 5e-4, "router": 1e-2, "backbone": 2e-5}
    )
    weight_decay: float = 0.0
    max_query_length: int = 64
    max_passage_length: int = 128  # for passages encoded during training (the dual phases)
    hard_negatives: int = 3  # per query, sampled from its negatives (dual phases)
    router_loss_weight: float = 1.0
    keep_weight: float = 0.0  # weight of the keep loss on queries of other domains (cached.KeepQueries); 0 = off
    keep_batch: int = 16  # keep queries drawn per batch when keep_weight > 0
    seed: int = 0
    average_runs: int = 1  # train_domain: average this many runs (seeds seed, seed+1, ...): loop.train_averaged
    routing_quantile: float = DEFAULT_QUANTILE  # share of its own queries a module's routing threshold lets below
    dev_fraction: float = 0.1
    eval_every: int = 0  # optimizer steps between dev evaluations; 0 = `evaluations` a run, else once per epoch
    evaluations: int = 0  # dev evaluations spread over the run's steps (when eval_every is 0)
    patience: int = 2  # evaluations without improvement before stopping
    min_delta: float = 0.0  # a checkpoint must beat the best dev score by this much to be kept
    max_steps: int | None = None
    max_seconds: float | None = None  # wall clock for the whole run, dev checks included (loop.train)
    max_examples: int | None = None  # subsample the training examples (seeded)
    checkpoint_dir: Path | None = None
    resume: bool = False
    show_progress: bool = True
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        from ddr_search.training.losses import LOSSES

        if self.average_runs < 1:
            raise ValueError(f"average_runs must be at least 1, got {self.average_runs}")
        if not 0.0 <= self.routing_quantile < 1.0:
            raise ValueError(f"routing_quantile must be in [0, 1), got {self.routing_quantile}")
        if self.keep_weight < 0 or self.keep_batch < 1:
            raise ValueError(f"keep_weight must be >= 0 and keep_batch >= 1, got {self.keep_weight}, {self.keep_batch}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {sorted(LOSSES)}")

    def lr_for(self, group: str, name: str | None = None) -> float:
        """A module-specific rate ("domain:nfcorpus") wins over its kind's ("domain")."""
        if name is not None and f"{group}:{name}" in self.lr:
            return float(self.lr[f"{group}:{name}"])
        return float(self.lr[group])

    def to_notes(self) -> dict[str, str | int | float]:
        notes: dict[str, str | int | float] = {}
        for key, value in asdict(self).items():
            if key in {"checkpoint_dir", "resume", "show_progress"} or value is None:
                continue
            notes[key] = value if isinstance(value, int | float | str) else str(value)
        return notes
