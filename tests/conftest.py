"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import cyclic_dataset, topic_shop
from nextaction.data.dataset import PreparedDataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def cyclic() -> PreparedDataset:
    return cyclic_dataset()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A topic shop log with item titles (``factories.topic_shop``)."""
    return topic_shop(tmp_path_factory.mktemp("shop"))
