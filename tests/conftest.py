"""Shared fixtures: the real backbone (loaded once per session) and the shared evaluation data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DDR_SHARED_DATA", REPO.parent / "shared" / "data"))

REAL_TEXTS = [
    "The statute of limitations for fraud claims generally begins when the fraud is discovered.",
    "Vitamin D supplementation did not reduce the risk of fractures in older adults.",
    "Transformers use self-attention to relate every token of a sequence to every other token.",
    "A short query",
    "Alveolar macrophages clear inhaled particles and pathogens from the lower respiratory tract.",
]


@pytest.fixture(autouse=True)
def _no_announced_workload(monkeypatch):
    """An ingest announces its size process-wide (model/precision.announce_passages); in one test process the
    ingests of earlier tests would add up and make later tests' torch encoders compile."""
    from ddr_search.model import precision

    monkeypatch.setattr(precision, "_announced_passages", 0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (research-licensed; the project ships none of it): skip where it is absent."""
    if not (SHARED_DATA / "beir").exists():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def backbone():
    from ddr_search.model.backbone import load_backbone

    return load_backbone()


@pytest.fixture()
def fresh_backbone():
    """A backbone of our own: DDRModel rewires its attention layers, so tests must not share it."""
    from ddr_search.model.backbone import load_backbone

    return load_backbone()


@pytest.fixture()
def real_texts() -> list[str]:
    return list(REAL_TEXTS)


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(reason: str) -> NoReturn:
    """A test's service is not there: under CI that fails the test (a skipped tier proves nothing and
    `scripts/services` starts every service), elsewhere it skips with the reason and the fix."""
    if IN_CI:
        pytest.fail(
            f"{reason} (CI=true: every service must run; .ci/run starts them with scripts/services)", pytrace=False
        )
    pytest.skip(f"{reason}: start the services with ./scripts/services")


def engine_url(name: str) -> str:
    """The URL of a running test node started by `scripts/services` (tests/engines), by its catalog name."""
    from tests.engines.node import running

    record = running(name)
    if record is None:
        service_missing(f"the {name} test node is not running")
    return str(record["url"])
