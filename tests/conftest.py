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


@pytest.fixture(scope="session")
def funnel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained view → cart → buy model with a calibrated behaviour head (factories.funnel_dataset)."""
    from factories import funnel_dataset
    from nextaction.model import ModelConfig
    from nextaction.training.checkpoint import save_model
    from nextaction.training.loop import fit
    from nextaction.training.state import TrainConfig
    from nextaction.workflow import calibrate_model

    out = tmp_path_factory.mktemp("funnel")
    data = funnel_dataset(n_users=150, seed=2)
    mc = ModelConfig(n_items=data.n_items, n_behaviors=len(data.behaviors), dim=16, behavior_head=True)
    tc = TrainConfig(epochs=4, batch_size=32, warmup_steps=5, precision="fp32")
    model, _ = fit(data, mc, tc, out_dir=out)
    save_model(out, model, tc, {"exclude_seen": False, **calibrate_model(model, data, tc)})
    data.save(out / "data")
    return out
