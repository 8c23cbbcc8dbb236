"""The Python API contract: Predictor.load, recommend, score, history; save→load gives identical scores."""

from __future__ import annotations

import pytest
import torch

from factories import cyclic_dataset, trained_model_dir
from nextaction import Predictor
from nextaction.errors import InputError
from nextaction.model import ModelConfig
from nextaction.training.checkpoint import load_model
from nextaction.training.state import TrainConfig


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    data = cyclic_dataset(n_users=40, n_items=25, length=9)
    mc = ModelConfig(n_items=data.n_items, n_behaviors=2, dim=32, max_len=10, dropout=0.0)
    tc = TrainConfig(epochs=25, batch_size=16, lr=5e-3, warmup_steps=5, precision="fp32")
    return trained_model_dir(out, data, mc, tc)


def test_save_load_gives_identical_scores(model_dir):
    p1 = Predictor.load(model_dir)
    model, _ = load_model(model_dir)
    p2 = Predictor(model, p1.config, p1.data)
    hist = ["i3", "i4", "i5"]
    torch.testing.assert_close(p1.scores(hist), p2.scores(hist), rtol=0, atol=0)
    assert p1.score(hist, ["i6", "i7"]) == p2.score(hist, ["i6", "i7"])


def test_recommend_learns_the_cycle(model_dir):
    p = Predictor.load(model_dir)
    recs = p.recommend(["i3", "i4", "i5"], k=3)
    assert recs[0][0] == "i6"
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    # seen items are excluded by default for single-behaviour logs
    assert not {"i3", "i4", "i5"} & {i for i, _ in p.recommend(["i3", "i4", "i5"], k=10)}


def test_history_precedes_test_target(model_dir):
    p = Predictor.load(model_dir)
    full = p.history("u1", split="all")
    before_test = p.history("u1", split="test")
    before_valid = p.history("u1", split="valid")
    assert len(full) == 9 and len(before_test) == 8 and len(before_valid) == 7
    assert before_test == full[:8]
    assert set(full[0]) == {"item_id", "behavior", "timestamp"}


def test_events_as_dicts_and_unknown_items(model_dir):
    p = Predictor.load(model_dir)
    a = p.score([{"item_id": "i3"}, {"item_id": "i4", "behavior": "interact"}], ["i5", "nope"])
    assert a[1] == float("-inf")
    p.recommend(["i3", "zzz"], k=2)
    assert p.last_unknown == ["zzz"]
    # an empty history (a brand-new user) still gets recommendations
    assert len(p.recommend([], k=5)) == 5


def test_bad_requests(model_dir):
    p = Predictor.load(model_dir)
    with pytest.raises(InputError, match="unknown user"):
        p.history("nobody")
    with pytest.raises(InputError, match="knows: interact"):
        p.recommend([{"item_id": "i3", "behavior": "buy"}])
    with pytest.raises(InputError, match="k must be"):
        p.recommend(["i3"], k=0)
    with pytest.raises(InputError, match="epoch milliseconds"):
        p.recommend([{"item_id": "i3", "timestamp": "yesterday"}])


def test_predict_gives_calibrated_probabilities_per_behaviour(funnel_dir):
    p = Predictor.load(funnel_dir)
    history = p.history("u5", split="all")
    probs = p.predict(history, ["i1", "i2", "nope"])
    assert list(probs) == ["i1", "i2", "nope"]
    assert probs["nope"] is None and p.last_unknown_items == ["nope"]
    for item in ("i1", "i2"):
        assert set(probs[item]) == {"view", "cart", "buy"}
    # the funnel's rule (a carted item is bought soon after) shows in the probabilities: an item just carted
    # is far likelier to be bought than an item of another taste group the user never touched
    carted = [{"item_id": "i1", "behavior": "view"}, {"item_id": "i1", "behavior": "cart"}]
    funnel = p.predict(carted, ["i1", "i55"])
    assert funnel["i1"]["buy"] > 2 * funnel["i55"]["buy"], funnel
    # an empty history (a new user) is a valid question too, and so is one longer than max_len
    assert set(p.predict([], ["i1"])["i1"]) == {"view", "cart", "buy"}
    long = history * (p.model.cfg.max_len // max(1, len(history)) + 2)
    assert set(p.predict(long, ["i1"])["i1"]) == {"view", "cart", "buy"}
    # the probabilities come from the ranker saved with the model, not from the head alone
    assert p.ranker is not None
    ranked = p.predict(history, ["i1", "i2"])
    p.ranker = None
    assert p.predict(history, ["i1", "i2"]) != ranked


def test_recommend_for_a_behaviour(funnel_dir):
    p = Predictor.load(funnel_dir)
    history = p.history("u5", split="all")
    recs = p.recommend(history, k=5, behavior="buy")
    assert len(recs) == 5
    probs = [s for _, s in recs]
    assert probs == sorted(probs, reverse=True)
    # the ranking matches predict()'s buy probabilities
    direct = p.predict(history, [i for i, _ in recs])
    assert [round(direct[i]["buy"], 4) for i, _ in recs] == [round(s, 4) for s in probs]
    with pytest.raises(InputError, match="the model knows: view, cart, buy"):
        p.recommend(history, behavior="fly")


def test_predict_needs_a_behaviour_head(model_dir):
    with pytest.raises(InputError, match="no behaviour head"):
        Predictor.load(model_dir).predict(["i1"], ["i2"])
