"""The loop's choice of checkpoints: best on dev overall, and per independent part (domain module)."""

from __future__ import annotations

import torch

from ddr_search.training.config import TrainConfig
from ddr_search.training.loop import train


class PartsTaskDouble:
    """A test double for a training task: two independent 1-number "modules" whose dev scores peak
    at known steps (a at step 2, b at step 4). No model is needed to test checkpoint selection."""

    def __init__(self) -> None:
        self.a = torch.nn.Parameter(torch.zeros(1))
        self.b = torch.nn.Parameter(torch.zeros(1))
        self.step = 0
        self.last_parts: dict[str, float] = {}

    def param_groups(self):
        return [
            {"name": "domain:a", "params": [self.a], "lr": 0.1},
            {"name": "domain:b", "params": [self.b], "lr": 0.1},
        ]

    def num_examples(self) -> int:
        return 8

    def loss(self, indices):
        self.step += 1
        return -(self.a + self.b).sum()  # both grow every step

    def evaluate(self) -> float:
        steps = round(float(self.a.detach()) / 0.1)  # Adam moves each by ~lr per step
        self.last_parts = {"a": -abs(steps - 2), "b": -abs(steps - 4)}
        return sum(self.last_parts.values()) / 2

    def part_keys(self):
        return {"a": ["domain:a.0"], "b": ["domain:b.0"]}

    def trainable_state(self):
        return {"domain:a.0": self.a.detach(), "domain:b.0": self.b.detach()}

    def load_trainable_state(self, state):
        with torch.no_grad():
            self.a.copy_(state["domain:a.0"])
            self.b.copy_(state["domain:b.0"])


def test_each_part_keeps_its_own_best_step():
    task = PartsTaskDouble()
    config = TrainConfig(epochs=6, batch_size=8, eval_every=1, patience=10, show_progress=False, grad_clip=0.0)
    result = train(task, config)
    assert result.steps == 6
    assert result.part_best == {"a": {"dev": 0.0, "step": 2}, "b": {"dev": 0.0, "step": 4}}
    assert round(float(task.a.detach()) / 0.1) == 2 and round(float(task.b.detach()) / 0.1) == 4


def test_early_stopping_and_baseline_kept_when_nothing_helps():
    task = PartsTaskDouble()
    task.part_keys = dict  # no parts: one global choice
    task.evaluate = lambda: -float(task.a.detach())  # every step makes dev worse
    config = TrainConfig(epochs=10, batch_size=8, eval_every=1, patience=2, show_progress=False)
    result = train(task, config)
    assert result.stopped_early and result.steps == 2 and result.best_step == 0
    assert float(task.a.detach()) == 0.0
