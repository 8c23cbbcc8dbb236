"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import cyclic_dataset
from nextaction.data.dataset import PreparedDataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def cyclic() -> PreparedDataset:
    return cyclic_dataset()
