"""The verbs behind the CLI: every decision and every baseline sees exactly what it may see.

With leave-one-out and ``train.valid_holdout`` the model learns the validation events of the users outside
the validation sample: baselines must learn them too, and nothing chosen on validation may read them.
"""

from __future__ import annotations

import numpy as np
import pytest

from factories import cyclic_dataset, funnel_dataset
from nextaction.data.schema import SPLIT, TEST, TRAIN, VALID
from nextaction.evaluation.baselines import MostPopular
from nextaction.evaluation.ranking import eval_examples, evaluate_scorer
from nextaction.training.loop import held_out_validation_users, trained_view, validation_users
from nextaction.training.state import TrainConfig
from nextaction.workflow import evaluate_dir, train_model

SETS = ["model.dim=16", "model.max_len=8", "train.epochs=1", "train.precision=fp32", "train.valid_holdout=10"]


def test_the_trained_view_marks_exactly_the_learned_events_train():
    data = cyclic_dataset(n_users=40, n_items=30, length=8)
    cfg = TrainConfig(valid_holdout=10)
    validated, learned = validation_users(data, cfg)
    view = trained_view(data, cfg)
    before, after = np.asarray(data.seqs.split), np.asarray(view.seqs.split)
    assert (after[learned] == TRAIN).all() and learned.sum() == 30
    assert (after[~learned] == before[~learned]).all()  # the validated users' VALID, every TEST, unchanged
    assert (view.events[SPLIT].to_numpy() == after).all()  # frame and arrays agree
    # a baseline fitted on it counts the learned events: most-popular = counts of TRAIN + learned
    items = np.asarray(data.seqs.items)
    expected = np.bincount(items[(before == TRAIN) | learned], minlength=data.n_items + 1)
    row = MostPopular().fit(view).score([np.array([1])])[0]
    assert np.array_equal(row[1:], expected[1:].astype(np.float64))
    assert trained_view(data, TrainConfig(valid_holdout=0)) is data
    assert held_out_validation_users(data, cfg).tolist() == validated.tolist()
    assert held_out_validation_users(data, TrainConfig(valid_holdout=0)) is None


@pytest.fixture(scope="module")
def loo_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("loo")
    cyclic_dataset(n_users=40, n_items=30, length=8).save(root / "data")
    train_model(root / "data", root / "m", sets=SETS)
    return root / "m"


def test_baselines_in_evaluate_learn_what_the_model_learned(loo_model):
    from nextaction.data.dataset import PreparedDataset

    result = evaluate_dir(loo_model, baselines=True)
    data = PreparedDataset.load(loo_model / "data")
    view = trained_view(data, TrainConfig(valid_holdout=10))
    expected = evaluate_scorer(MostPopular().fit(view), data, split=TEST)["metrics"]
    assert result["baselines"]["most-popular"] == expected
    assert "the validation events of 30 users" in result["protocol"]["trained_on"]


def test_evaluating_the_valid_split_reads_the_held_out_users_only(loo_model):
    from nextaction.data.dataset import PreparedDataset

    result = evaluate_dir(loo_model, split="valid", baselines=True)
    data = PreparedDataset.load(loo_model / "data")
    held = held_out_validation_users(data, TrainConfig(valid_holdout=10))
    assert result["protocol"]["users_evaluated"] == len(held) == 10
    assert "validated users only" in result["protocol"]["validation_users"]
    assert len(eval_examples(data.seqs, split=VALID)) == 40  # the other 30 were trained on


def test_behaviour_decisions_read_the_held_out_users_only():
    """Leave-one-out with a behaviour head: the ranker and calibration fit on held-out users' windows."""
    from nextaction.behavior.evaluation import eval_setup

    data = funnel_dataset(n_users=60, length=12, seed=3)
    data.report = {"split": {"kind": "leave_one_out"}}
    cfg = TrainConfig(valid_holdout=20)
    held = held_out_validation_users(data, cfg)
    assert held is not None and len(held) == 20
    setup = eval_setup(data, valid_users=held)
    assert set(setup.valid.user_idx.tolist()) <= set(held.tolist())
    assert len(setup.test) == len(eval_setup(data).test)  # the test window is every user's
