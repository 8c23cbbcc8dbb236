"""Behaviour prediction end to end: the head learns the funnel, calibration helps, probabilities are sane."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factories import funnel_dataset
from nextaction.behavior.calibration import calibrate, probabilities
from nextaction.behavior.evaluation import eval_setup, evaluate_behavior_scorer
from nextaction.behavior.ranker import BehaviorRanker, ModelBehaviorScorer, n_ranker_features
from nextaction.evaluation.metrics import auc, log_loss
from nextaction.model import ModelConfig, NextActionModel
from nextaction.training.loop import fit
from nextaction.training.state import TrainConfig

CART, BUY = 2, 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = funnel_dataset(n_users=300, seed=1)
    mc = ModelConfig(n_items=data.n_items, n_behaviors=len(data.behaviors), dim=32, behavior_head=True)
    tc = TrainConfig(epochs=12, batch_size=32, warmup_steps=10, patience=100, precision="fp32")
    model, _ = fit(data, mc, tc, out_dir=tmp_path_factory.mktemp("m"))
    return data, model


def test_buy_after_cart_is_learned(trained):
    """Users always buy what they carted: P(buy | just carted item) must be far above P(buy | random item)."""
    from nextaction.behavior.candidates import ItemStats

    data, model = trained
    stats = ItemStats(data.seqs, 3)
    rng = np.random.default_rng(0)
    carted_logits, random_logits = [], []
    with torch.no_grad():
        for _ in range(40):
            hist_items = torch.from_numpy(rng.integers(1, data.n_items + 1, size=6))
            hist_items[-1] = hist_items[-2]  # view then cart the same item
            behaviors = torch.tensor([1, 1, 1, 1, 1, CART])
            items, behaviors = hist_items[None], behaviors[None]
            h = model(items, behaviors, torch.arange(6)[None] * 3_600_000)
            others = [i for i in range(1, data.n_items + 1) if i not in hist_items.tolist()]
            cand = torch.tensor([[[int(hist_items[-1]), int(rng.choice(others))]]])
            feats = torch.from_numpy(stats.features(cand.numpy(), np.inf))
            z = model.behavior_logits(h, items, behaviors, cand, torch.tensor([[5]]), feats)[0, 0, :, BUY - 1]
            carted_logits.append(float(z[0]))
            random_logits.append(float(z[1]))
    p_carted = torch.sigmoid(torch.tensor(carted_logits)).mean()
    p_random = torch.sigmoid(torch.tensor(random_logits)).mean()
    assert p_carted > 0.5 and p_random < 0.1, (p_carted, p_random)


def test_probabilities_in_unit_interval_and_metrics_reported(trained):
    data, model = trained
    setup = eval_setup(data, ratio=5)
    result = evaluate_behavior_scorer(ModelBehaviorScorer(model), data, setup)
    for name in ("view", "cart", "buy"):
        m = result[name]
        assert m["ECE"] < 0.1, (name, m)  # calibrated on the valid window, measured on the test window
        assert m["AUC"] > 0.8, (name, m)
        for key in ("GAUC", "logloss", "accuracy", "precision", "recall", "F1"):
            assert np.isfinite(m[key])
    assert result["next_buy"]["HR@10"] > 0.5
    scores = ModelBehaviorScorer(model).behavior_scores(data.seqs, setup.test)
    cal = calibrate(
        ModelBehaviorScorer(model).behavior_scores(data.seqs, setup.valid), setup.valid.labels, data.behaviors
    )
    probs = probabilities(scores, cal, data.behaviors)
    for k, name in enumerate(data.behaviors[1:]):  # each column is its own Platt scaling, by hand
        a, c = cal[name]["a"], cal[name]["c"]
        np.testing.assert_allclose(probs[:, k], 1 / (1 + np.exp(-(a * scores[:, k] + c))), rtol=1e-6)


def test_calibration_lowers_held_out_log_loss(trained):
    """Platt scaling fitted on the valid window lowers the log-loss on the test window."""
    data, model = trained
    setup = eval_setup(data, ratio=20)
    scorer = ModelBehaviorScorer(model)
    valid, test = (
        scorer.behavior_scores(data.seqs, setup.valid),
        scorer.behavior_scores(data.seqs, setup.test),
    )
    cal = calibrate(valid, setup.valid.labels, data.behaviors)
    raw = 1 / (1 + np.exp(-test.astype(np.float64)))
    calibrated = probabilities(test, cal, data.behaviors)
    for k in range(3):
        assert log_loss(calibrated[:, k], setup.test.labels[:, k]) < log_loss(
            raw[:, k], setup.test.labels[:, k]
        )


def test_head_is_causal_and_empty_history_is_defined():
    torch.manual_seed(0)
    model = NextActionModel(ModelConfig(n_items=30, n_behaviors=4, dim=16, behavior_head=True, dropout=0.0))
    model.eval()
    items = torch.randint(1, 31, (2, 8))
    behaviors = torch.randint(1, 4, (2, 8))
    ts = torch.arange(8)[None].expand(2, 8) * 1000
    cand = torch.randint(1, 31, (2, 8, 5))
    upto = torch.arange(8)[None].expand(2, 8)
    feats = torch.rand(2, 8, 5, 4)
    with torch.no_grad():
        a = model.behavior_logits(model(items, behaviors, ts), items, behaviors, cand, upto, feats)
        items2 = items.clone()
        items2[:, 5:] = torch.randint(1, 31, (2, 3))
        b = model.behavior_logits(model(items2, behaviors, ts), items2, behaviors, cand, upto, feats)
        torch.testing.assert_close(a[:, :5], b[:, :5])  # queries before position 5 never see the change
        empty = torch.zeros(1, 1, dtype=torch.long)
        z = model.behavior_logits(
            model(empty, empty, empty), empty, empty, cand[:1, :1], torch.tensor([[-1]]), feats[:1, :1]
        )
    assert torch.isfinite(z).all()


def test_ranker_recovers_a_known_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 3)) * np.array([1.0, 10.0, 0.0]) + np.array([0.0, 5.0, 2.0])  # col 2 constant
    y = np.stack([rng.random(5000) < 1 / (1 + np.exp(-(2 * x[:, 0] - 0.2 * x[:, 1]))), np.zeros(5000)], 1)
    r = BehaviorRanker.fit(x, y)
    w = np.asarray(r.coef)
    assert w[0, 0] > 0.5 and w[0, 1] < -0.5 and abs(w[0, 2]) < 1e-9  # standardised: both rules found
    assert np.all(w[1] == 0) and r(x)[0, 1] < -8  # a behaviour never seen: its (clipped) base rate
    assert np.isfinite(r(x)).all()
    again = BehaviorRanker.from_dict(r.to_dict())
    assert again == r and np.array_equal(again(x), r(x))
    assert BehaviorRanker.from_dict(None) is None


def test_ranker_is_fitted_on_the_valid_window_and_ranks_the_test_window(trained):
    data, model = trained
    setup = eval_setup(data, ratio=5)
    scorer = ModelBehaviorScorer(model)
    head = scorer.behavior_scores(data.seqs, setup.test)  # no ranker yet: the head's logits
    scorer.fit(data, train=setup.valid)
    assert scorer.ranker is not None and len(scorer.ranker.mean) == n_ranker_features(3)
    ranked = scorer.behavior_scores(data.seqs, setup.test)
    assert ranked.shape == head.shape and not np.allclose(ranked, head)
    for k in range(3):
        assert auc(ranked[:, k], setup.test.labels[:, k]) > 0.8
    # fitting is deterministic: the same window gives the same ranker
    assert ModelBehaviorScorer(model).fit(data, train=setup.valid).ranker == scorer.ranker


def test_head_only_pass_gives_the_same_head_logits(trained):
    """Without a ranker (the per-epoch validation) only the head's logits are computed: the same numbers as
    the full pass, no features; a later request for features is not served from the head-only cache."""
    data, model = trained
    setup = eval_setup(data)
    scorer = ModelBehaviorScorer(model)
    head_only = scorer.behavior_scores(data.seqs, setup.valid)
    assert scorer._last is not None and scorer._last[3].shape[1] == 0
    head, x = scorer.signals(data.seqs, setup.valid)
    np.testing.assert_allclose(head_only, head, rtol=1e-5, atol=1e-6)
    assert x.shape == (len(setup.valid.items), n_ranker_features(len(data.behaviors) - 1))
