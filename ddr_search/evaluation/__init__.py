"""BEIR-style evaluation: run a method over a dataset and score it with ir-measures."""

from ddr_search.data.beir import BeirDataset, load_beir
from ddr_search.evaluation.harness import EvalResult, Method, evaluate
from ddr_search.evaluation.metrics import METRICS, score_run

__all__ = ["METRICS", "BeirDataset", "EvalResult", "Method", "evaluate", "load_beir", "score_run"]
