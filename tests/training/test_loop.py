"""The loop's choice of checkpoints (best on dev overall, and per independent part) and its time limit."""

from __future__ import annotations

import time

import torch

from ddr_search.training.config import TrainConfig
from ddr_search.training.loop import TIMED_STEPS, train, train_averaged


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


class SeededTaskDouble:
    """A test double whose every step pushes one 3-number module along a random direction (torch's seeded
    generator), so runs with different seeds end apart; dev improves with every step taken."""

    def __init__(self) -> None:
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.steps = 0

    def param_groups(self):
        return [{"name": "domain:w", "params": [self.w], "lr": 0.1}]

    def num_examples(self) -> int:
        return 8

    def loss(self, indices):
        self.steps += 1
        return -(self.w * torch.randn(3)).sum()

    def evaluate(self) -> float:
        return float(self.steps) - float(self.w.detach().abs().sum())

    def part_keys(self):
        return {}

    def trainable_state(self):
        return {"domain:w.0": self.w.detach()}

    def load_trainable_state(self, state):
        with torch.no_grad():
            self.w.copy_(state["domain:w.0"])


def test_averaged_runs_end_on_the_mean_of_runs_from_the_same_start():
    config = TrainConfig(epochs=3, batch_size=8, eval_every=1, patience=10, show_progress=False, seed=5)
    ends = []
    for seed in (5, 6, 7):
        single = SeededTaskDouble()
        train(single, TrainConfig(**{**config.__dict__, "seed": seed}))
        ends.append(single.w.detach().clone())
    assert not torch.equal(ends[0], ends[1])  # the seeds really differ

    task = SeededTaskDouble()
    config.average_runs = 3
    result = train_averaged(task, config)
    torch.testing.assert_close(task.w.detach(), torch.stack(ends).mean(dim=0))
    assert result.steps == 9
    assert result.best_dev == task.evaluate()  # the dev score of the average, not of any one run


def test_one_run_is_plain_training():
    config = TrainConfig(epochs=3, batch_size=8, eval_every=1, patience=10, show_progress=False)
    single, averaged = SeededTaskDouble(), SeededTaskDouble()
    train(single, config)
    train_averaged(averaged, config)
    assert torch.equal(single.w.detach(), averaged.w.detach())


class SlowTaskDouble(SeededTaskDouble):
    """SeededTaskDouble whose every step takes 0.1 s of wall clock, for the loop's time limit."""

    def loss(self, indices):
        time.sleep(0.1)
        return super().loss(indices)


def test_a_time_limit_shortens_the_run_and_checks_dev_on_its_last_step():
    task = SlowTaskDouble()
    config = TrainConfig(epochs=1000, batch_size=8, evaluations=4, patience=100, show_progress=False, max_seconds=2.0)
    result = train(task, config)
    assert result.time_limited and result.notes()["time_limited"] == 1
    assert TIMED_STEPS <= result.steps <= 20  # 2 s of 0.1 s steps, of the 1,000 planned
    checked = [h["step"] for h in result.history]
    assert checked[0] == 0 and checked[-1] == result.steps
    assert 4 <= len(checked) - 1 <= 5  # the four checks spread over the steps that fit, plus the last step's

    unlimited = train(SlowTaskDouble(), TrainConfig(epochs=5, batch_size=8, show_progress=False, max_seconds=60.0))
    assert unlimited.steps == 5 and not unlimited.time_limited and "time_limited" not in unlimited.notes()
