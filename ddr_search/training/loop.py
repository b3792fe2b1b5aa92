"""The training loop every phase shares: batches, accumulation, AdamW, dev early stopping, checkpoints.

A phase supplies a `Task` (its loss on a batch of example indices, its dev metric and the tensors it
trains); the loop owns order, seeds, progress, checkpoints and `--resume`, so they behave the same
for the general module, domain modules, label-free modules and the DR baseline.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ddr_search.errors import InputError
from ddr_search.files import write_atomically
from ddr_search.training.config import TrainConfig

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
TIMED_STEPS = 3  # steps a time-limited run takes before it sets its length from their pace


class Task(Protocol):
    def param_groups(self) -> list[dict[str, object]]:
        """[{"name": ..., "params": [...], "lr": ...}] (only tensors that train)."""
        ...

    def num_examples(self) -> int: ...

    def loss(self, indices: list[int]) -> torch.Tensor: ...

    def evaluate(self) -> float:
        """Dev metric (higher is better), computed on the held-out slice only."""
        ...

    def trainable_state(self) -> dict[str, torch.Tensor]: ...

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None: ...


@dataclass
class TrainResult:
    baseline_dev: float
    best_dev: float
    best_step: int
    steps: int
    seconds: float
    seconds_per_step: float
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)
    part_best: dict[str, dict[str, float]] = field(default_factory=dict)
    time_limited: bool = False  # `max_seconds` cut the run short of its planned steps

    def notes(self) -> dict[str, str | int | float]:
        return {
            "dev_before": round(self.baseline_dev, 4),
            "dev_after": round(self.best_dev, 4),
            "best_step": self.best_step,
            "steps": self.steps,
            "train_seconds": round(self.seconds, 1),
            "seconds_per_step": round(self.seconds_per_step, 3),
            **({"time_limited": 1} if self.time_limited else {}),
        }


@dataclass
class _TimeLimit:
    """Fits a run into `seconds` of wall clock, dev checks included: once TIMED_STEPS steps have set
    the pace, the run is shortened to the steps that fit; a later slowdown ends it at the next step."""

    seconds: float
    started: float  # perf_counter when the run began
    eval_seconds: float = 0.0  # the slowest dev check so far
    planned: bool = False
    hit: bool = False

    def steps(self, total: int, step: int, timed_steps: int, step_seconds: float, evals_left: int) -> int:
        """How many steps the run takes in all: `total`, or fewer when the rest would not fit."""
        left = self.seconds - (time.perf_counter() - self.started) - self.eval_seconds * evals_left
        pace = step_seconds / max(1, timed_steps)
        if not self.planned and timed_steps >= TIMED_STEPS:
            self.planned = True
            fits = step + max(0, int(left // pace))
        else:
            fits = step if left < pace else total
        if fits < total:
            self.hit = True
            log.warning("time limit of %.0f s: training stops after %d of %d steps", self.seconds, fits, total)
        return min(total, fits)


def _save(path: Path, payload: dict[str, object]) -> None:
    write_atomically(path, lambda f: torch.save(payload, f))


def _snapshot(task: Task) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in task.trainable_state().items()}


def _parts(task: Task) -> dict[str, list[str]]:
    """Optional: independent parts of the task (e.g. one domain module each) chosen by their own dev score."""
    return dict(getattr(task, "part_keys", dict)())


def _update_parts(task: Task, step: int, best_parts: dict[str, dict[str, object]], min_delta: float) -> None:
    scores = getattr(task, "last_parts", {})
    state = None
    for part, keys in _parts(task).items():
        if part not in scores:
            continue
        if part not in best_parts or scores[part] > best_parts[part]["dev"] + min_delta:
            state = state or task.trainable_state()
            best_parts[part] = {
                "dev": scores[part],
                "step": step,
                "state": {k: state[k].detach().clone() for k in keys},
            }


def train(task: Task, config: TrainConfig) -> TrainResult:
    """Run until epochs/max_steps or early stopping; the task ends holding its best-on-dev tensors.

    The dev score before any step is the first candidate, so training never returns a module worse
    (on dev) than the one it started from; `min_delta` makes a change earn its place.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    groups = task.param_groups()
    optimizer = torch.optim.AdamW(
        [{"params": g["params"], "lr": g["lr"]} for g in groups], weight_decay=config.weight_decay
    )
    n = task.num_examples()
    if n == 0:
        raise InputError("no training examples")
    per_step = config.batch_size * config.accumulation
    steps_per_epoch = max(1, math.ceil(n / per_step))
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)

    def cadence(steps: int) -> int:
        if config.eval_every:
            return config.eval_every
        return max(1, steps // config.evaluations) if config.evaluations else steps_per_epoch

    eval_every = cadence(total)
    limit = _TimeLimit(config.max_seconds, started) if config.max_seconds is not None else None
    checkpoint = Path(config.checkpoint_dir) / CHECKPOINT if config.checkpoint_dir else None

    step, bad, stopped = 0, 0, False
    history: list[dict[str, float]] = []
    elapsed = 0.0
    if config.resume:
        if checkpoint is None or not checkpoint.exists():
            raise InputError(f"--resume: no checkpoint at {checkpoint}")
        saved = torch.load(checkpoint, weights_only=False)
        task.load_trainable_state(saved["trainable"])
        optimizer.load_state_dict(saved["optimizer"])
        step, bad, stopped = saved["step"], saved["bad"], saved["stopped"]
        baseline, best = saved["baseline"], saved["best"]
        best_step, best_state = saved["best_step"], saved["best_state"]
        history, elapsed = saved["history"], saved["elapsed"]
        best_parts = saved["best_parts"]
        torch.set_rng_state(saved["rng"])
    else:
        baseline = best = task.evaluate()
        if limit is not None:
            limit.eval_seconds = time.perf_counter() - started
        best_step, best_state = 0, _snapshot(task)
        history.append({"step": 0, "dev": baseline, **_part_scores(task)})
        best_parts = {}
        _update_parts(task, 0, best_parts, config.min_delta)

    def save() -> None:
        if checkpoint is not None:
            _save(
                checkpoint,
                {
                    "trainable": task.trainable_state(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "bad": bad,
                    "stopped": stopped,
                    "baseline": baseline,
                    "best": best,
                    "best_step": best_step,
                    "best_state": best_state,
                    "history": history,
                    "elapsed": elapsed,
                    "rng": torch.get_rng_state(),
                    "best_parts": best_parts,
                },
            )

    bar = tqdm(total=total, initial=step, desc="training", unit="step", disable=not config.show_progress)
    looping = time.perf_counter()
    start_step, start_elapsed = step, elapsed
    while step < total and not stopped:
        epoch, within = divmod(step, steps_per_epoch)
        order = np.random.RandomState(config.seed + epoch).permutation(n)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        for micro in range(config.accumulation):
            first = (within * config.accumulation + micro) * config.batch_size
            indices = order[first : first + config.batch_size].tolist()
            if not indices:
                break
            loss = task.loss(indices) / config.accumulation
            loss.backward()
            loss_value += float(loss.detach())
        params = [p for g in groups for p in g["params"]]
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        step += 1
        elapsed += time.perf_counter() - t0
        bar.update(1)
        rate = (step - start_step) / (time.perf_counter() - looping)
        bar.set_postfix(loss=f"{loss_value:.4f}", steps_per_s=f"{rate:.2f}")
        if limit is not None and step < total:
            evals_left = math.ceil((total - step) / eval_every) + 1
            fitted = limit.steps(total, step, step - start_step, elapsed - start_elapsed, evals_left)
            if fitted < total:
                total, eval_every = fitted, cadence(fitted)
                bar.total = total
                bar.refresh()
        if step % eval_every == 0 or step == total:
            checking = time.perf_counter()
            dev = task.evaluate()
            if limit is not None:
                limit.eval_seconds = max(limit.eval_seconds, time.perf_counter() - checking)
            history.append({"step": step, "dev": dev, "loss": loss_value, **_part_scores(task)})
            _update_parts(task, step, best_parts, config.min_delta)
            if dev > best + config.min_delta:
                best, best_step, best_state, bad = dev, step, _snapshot(task), 0
            else:
                bad += 1
                stopped = bad >= config.patience
            log.info("step %d dev %.4f (best %.4f at %d)", step, dev, best, best_step)
            bar.set_postfix(loss=f"{loss_value:.4f}", dev=f"{dev:.4f}", best=f"{best:.4f}")
            save()
    bar.close()
    # Independent parts (domain modules under prior routing) each keep their own best-on-dev step;
    # shared tensors (the router) keep the step with the best mean.
    final = dict(best_state)
    for part in best_parts.values():
        final.update(part["state"])
    task.load_trainable_state(final)
    done = step
    return TrainResult(
        baseline_dev=baseline,
        best_dev=best,
        best_step=best_step,
        steps=done,
        seconds=elapsed,
        seconds_per_step=elapsed / max(1, done),
        stopped_early=stopped,
        history=history,
        part_best={name: {"dev": float(p["dev"]), "step": int(p["step"])} for name, p in best_parts.items()},
        time_limited=limit is not None and limit.hit,
    )


def train_averaged(task: Task, config: TrainConfig) -> TrainResult:
    """`config.average_runs` trainings from the task's current tensors, seeds `seed`, `seed + 1`, ...; the
    task ends holding the uniform average of each run's best-on-dev tensors (a model soup).

    Why: on a small dev set the best-on-dev step of one run is noisy (NFCorpus: +2.0 to +2.7 nDCG@10 on
    dev across seeds of one recipe); the average of runs that start from the same tensors is a module
    with less run-to-run variance. One run is plain `train`. Checkpoints go to `seed-<k>` sub-folders.
    """
    runs = config.average_runs
    if runs == 1:
        return train(task, config)
    start = {key: value.clone() for key, value in task.trainable_state().items()}
    ends, results = [], []
    began = time.perf_counter()
    for k in range(runs):
        task.load_trainable_state(start)
        folder = Path(config.checkpoint_dir) / f"seed-{config.seed + k}" if config.checkpoint_dir else None
        share = None  # a time limit is shared out: each run gets an equal part of what is left
        if config.max_seconds is not None:
            share = max(0.0, config.max_seconds - (time.perf_counter() - began)) / (runs - k)
        results.append(train(task, replace(config, seed=config.seed + k, checkpoint_dir=folder, max_seconds=share)))
        ends.append({key: value.clone() for key, value in task.trainable_state().items()})
    task.load_trainable_state({key: torch.stack([end[key] for end in ends]).mean(dim=0) for key in start})
    seconds = sum(r.seconds for r in results)
    steps = sum(r.steps for r in results)
    return TrainResult(
        baseline_dev=results[0].baseline_dev,
        best_dev=task.evaluate(),
        best_step=results[0].best_step,
        steps=steps,
        seconds=seconds,
        seconds_per_step=seconds / max(1, steps),
        stopped_early=all(r.stopped_early for r in results),
        history=[{**h, "run": k} for k, r in enumerate(results) for h in r.history],
        part_best={f"run{k}:{name}": part for k, r in enumerate(results) for name, part in r.part_best.items()},
        time_limited=any(r.time_limited for r in results),
    )


def _part_scores(task: Task) -> dict[str, float]:
    return {f"dev:{k}": float(v) for k, v in getattr(task, "last_parts", {}).items()}
