"""Shared fixtures: the real backbone (loaded once per session) and the shared evaluation data."""

from __future__ import annotations

import os
from pathlib import Path

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
