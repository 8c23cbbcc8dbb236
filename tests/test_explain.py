"""Explanations: occlusion and rollout attributions, their conventions, similar items, API and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch

from nextaction import Predictor
from nextaction import explain as ex
from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import (
    BEHAVIOR_IDX,
    ITEM_ID,
    ITEM_IDX,
    SPLIT,
    TEST,
    TIMESTAMP,
    TRAIN,
    USER_ID,
    USER_IDX,
    VALID,
    VALUE,
)
from nextaction.errors import InputError
from nextaction.model import ModelConfig, NextActionModel
from nextaction.training.checkpoint import save_model
from nextaction.training.loop import fit
from nextaction.training.state import TrainConfig
from test_cli import run

N_ITEMS = 20
A, B = "i1", "i2"  # B always follows A


def a_then_b_dataset(*, n_users: int = 120, length: int = 12, seed: int = 0) -> PreparedDataset:
    """Random walks over items 3..20 where item 1 (A) appears now and then and is always followed by 2 (B).

    Items have titles ("Alpha", "Beta", …) so explanations can name them. Leave-one-out split.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        seq: list[int] = []
        while len(seq) < length:
            if len(seq) < length - 1 and rng.random() < 0.2:
                seq += [1, 2]
            else:
                seq.append(int(rng.integers(3, N_ITEMS + 1)))
        for t, item in enumerate(seq):
            split = TEST if t == length - 1 else VALID if t == length - 2 else TRAIN
            rows.append((u, item, 1, t * 60_000, split))
    events = pl.DataFrame(
        rows,
        schema=[
            (USER_IDX, pl.Int64),
            (ITEM_IDX, pl.Int64),
            (BEHAVIOR_IDX, pl.Int64),
            (TIMESTAMP, pl.Int64),
            (SPLIT, pl.Int8),
        ],
        orient="row",
    ).with_columns(pl.lit(None, dtype=pl.Float64).alias(VALUE))
    titles = ["Alpha", "Beta", *(f"Gadget {i}" for i in range(3, N_ITEMS + 1))]
    return PreparedDataset(
        events=events,
        users=pl.DataFrame(
            {USER_IDX: range(1, n_users + 1), USER_ID: [f"u{u}" for u in range(1, n_users + 1)]}
        ),
        items=pl.DataFrame(
            {
                ITEM_IDX: range(1, N_ITEMS + 1),
                ITEM_ID: [f"i{i}" for i in range(1, N_ITEMS + 1)],
                "title": titles,
            }
        ),
        behaviors=["<pad>", "interact"],
        report={"split": {"kind": "leave_one_out"}},
    )


@pytest.fixture(scope="module")
def ab_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ab")
    data = a_then_b_dataset()
    mc = ModelConfig(n_items=data.n_items, n_behaviors=2, dim=32, max_len=16, dropout=0.0)
    tc = TrainConfig(epochs=12, batch_size=32, lr=5e-3, warmup_steps=5, precision="fp32", threads=1)
    model, _ = fit(data, mc, tc, out_dir=out)
    save_model(out, model, tc, {"exclude_seen": False})
    data.save(out / "data")
    return out


@pytest.fixture(scope="module")
def p(ab_dir) -> Predictor:
    return Predictor.load(ab_dir)


HISTORY = ["i7", "i12", "i5", "i15", "i9", A]  # A among other items


def test_the_event_that_drives_the_item_ranks_first(p):
    assert B in {i for i, _ in p.recommend(HISTORY, k=3)}  # the model learned A -> B
    e = p.explain(HISTORY, B)
    assert e.contributions[0][:3] == (5, A, "interact")
    assert e.contributions[0][3] > 0
    # A moves B's score far more than any other event does
    assert e.contributions[0][3] > 3 * max(abs(c[3]) for c in e.contributions[1:])
    assert e.sentence == "Recommended because you interacted with Alpha."
    assert e.titles[A] == "Alpha" and e.titles[B] == "Beta"


def test_sign_order_and_share_conventions(p):
    e = p.explain(HISTORY, B, top=None)
    full = p.score(HISTORY, [B])[0]
    assert e.score == pytest.approx(full, abs=1e-5)
    assert len(e.contributions) == len(HISTORY)
    values = [c[3] for c in e.contributions]
    assert values == sorted(values, reverse=True)  # largest first
    for (pos, _, _, value), share in zip(e.contributions, e.shares, strict=True):
        # positive = the event pushed the item up: the score without it is lower
        without = p.score(HISTORY[:pos] + HISTORY[pos + 1 :], [B])[0]
        assert value == pytest.approx(full - without, abs=1e-4)
        assert share == pytest.approx(value / sum(abs(v) for v in values))
    assert sum(abs(s) for s in e.shares) == pytest.approx(1.0)
    # ``top`` cuts the list but not the shares' denominator
    short = p.explain(HISTORY, B, top=2)
    assert short.contributions == e.contributions[:2] and short.shares == e.shares[:2]


def test_explanations_are_deterministic(p, ab_dir):
    for method in ex.METHODS:
        first = p.explain(HISTORY, "i9", method=method, top=None)
        assert first == p.explain(HISTORY, "i9", method=method, top=None)
        assert first == Predictor.load(ab_dir).explain(HISTORY, "i9", method=method, top=None)
        assert first.to_dict() == json.loads(json.dumps(first.to_dict()))


def test_batched_occlusion_equals_one_by_one_removal_beyond_the_window(p):
    """A history longer than max_len: removing a window event lets the event before the window slide in."""
    rng = np.random.default_rng(3)
    max_len = p.model.cfg.max_len
    history = [
        {"item_id": f"i{int(i)}", "timestamp": 1_700_000_000_000 + 90_000 * t * (1 + t % 3)}
        for t, i in enumerate(rng.integers(1, N_ITEMS + 1, size=max_len + 4))
    ]
    e = p.explain(history, "i4", top=None)
    full = p.score(history, ["i4"])[0]
    by_position = {c[0]: c[3] for c in e.contributions}
    assert set(by_position) == set(range(len(history)))
    for pos in range(len(history)):
        edited = history[:pos] + history[pos + 1 :]
        expected = full - p.score(edited, ["i4"])[0] if pos >= len(history) - max_len else 0.0
        assert by_position[pos] == pytest.approx(expected, abs=1e-4), pos


def test_any_edited_history_works(p):
    """Not a stored user: dict events with behaviours and times, an unknown item that keeps its place."""
    history = [
        {"item_id": "i8", "behavior": "interact", "timestamp": 1_000},
        {"item_id": "not-an-item", "timestamp": 2_000},
        {"item_id": A, "timestamp": 5_000},
    ]
    e = p.explain(history, B, top=None)
    assert e.unknown_items == ["not-an-item"]
    assert sorted(c[0] for c in e.contributions) == [0, 2]  # positions in the history as given
    assert e.contributions[0][:2] == (2, A)
    assert e.score == pytest.approx(p.score(history, [B])[0], abs=1e-5)
    # removing A from the edited history is what the explanation says it does
    assert e.contributions[0][3] == pytest.approx(e.score - p.score(history[:2], [B])[0], abs=1e-4)


def test_empty_history_and_bad_requests(p):
    e = p.explain([], B)
    assert e.contributions == [] and e.shares == []
    assert "popular overall" in e.sentence
    assert e.score == pytest.approx(p.score([], [B])[0], abs=1e-6)
    with pytest.raises(InputError, match="unknown item 'nope'"):
        p.explain(HISTORY, "nope")
    with pytest.raises(InputError, match="method must be one of"):
        p.explain(HISTORY, B, method="shap")
    with pytest.raises(InputError, match="no behaviour head"):
        p.explain(HISTORY, B, behavior="interact")
    with pytest.raises(InputError, match="top must be"):
        p.explain(HISTORY, B, top=0)


def test_rollout_shares_are_a_distribution_over_the_window(p):
    max_len = p.model.cfg.max_len
    history = [f"i{3 + t % 17}" for t in range(max_len + 3)]
    e = p.explain(history, B, method="rollout", top=None)
    shares = dict((c[0], s) for c, s in zip(e.contributions, e.shares, strict=True))
    assert all(s >= 0 for s in shares.values())
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(shares[pos] == 0 for pos in range(3))  # outside the model's window
    assert [c[3] for c in e.contributions] == pytest.approx(e.shares)  # values are their own shares
    assert e.score == pytest.approx(p.score(history, [B])[0], abs=1e-5)


@pytest.mark.parametrize("rel_pos_bias", [False, True])
def test_attention_maps_are_the_ones_the_model_used(rel_pos_bias):
    """softmax(qkᵀ/√d + bias) from the hooks reproduces each attention module's output, bias included."""
    torch.manual_seed(0)
    model = NextActionModel(
        ModelConfig(n_items=30, n_behaviors=2, dim=16, max_len=8, rel_pos_bias=rel_pos_bias)
    )
    if rel_pos_bias:
        with torch.no_grad():
            model.rel_bias.normal_(0.0, 2.0)  # a bias that matters
    model.eval()
    batch = ex.window_batch(np.array([3, 4, 5, 9, 2]), np.ones(5, dtype=np.int64), np.arange(5) * 1000, 8)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [
        blk.attn.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
        for blk in model.blocks
    ]
    maps = ex.attention_maps(model, batch)
    for h in hooks:
        h.remove()
    assert len(maps) == len(model.blocks)
    with torch.no_grad():
        for blk, att, (x, out) in zip(model.blocks, maps, seen[-len(maps) :], strict=True):
            B_, L, D = x.shape
            v = blk.attn.qkv(x).split(D, dim=2)[2].view(B_, L, 2, D // 2).transpose(1, 2)
            y = blk.attn.proj((att @ v).transpose(1, 2).reshape(B_, L, D))
            torch.testing.assert_close(y, out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kw",
    [{}, {"item_bias": True, "tie_weights": False}, {"text_dim": 8, "fusion": "id+text"}],
)
def test_one_item_scorer_matches_the_catalogue_scores(kw):
    """Scoring only the explained item gives its column of the full scores, for every output variant."""
    from nextaction.scoring import score_histories

    torch.manual_seed(0)
    model = NextActionModel(ModelConfig(n_items=30, n_behaviors=2, dim=16, max_len=8, **kw))
    with torch.no_grad():
        if model.out_bias is not None:
            model.out_bias.normal_()
        if model.text_proj is not None:
            model.text_emb.normal_()
    model.eval()
    items = np.array([3, 4, 5, 9, 2, 7, 1, 8, 6, 11])  # longer than max_len
    batch, _ = ex.occlusion_batch(items, np.ones(10, dtype=np.int64), np.arange(10) * 1000, 8)
    with torch.no_grad():
        full = score_histories(model, batch)[:, 12].double().numpy()
    np.testing.assert_allclose(ex.next_item_scorer(model, 12)(batch), full, rtol=1e-5, atol=1e-5)


def test_similar_items(p):
    sims = p.similar("i5", k=5)
    assert len(sims) == 5
    assert "i5" not in {i for i, _ in sims} and "" not in {i for i, _ in sims}
    assert [s for _, s in sims] == sorted((s for _, s in sims), reverse=True)
    assert all(-1.0 - 1e-9 <= s <= 1.0 + 1e-9 for _, s in sims)
    assert len(p.similar("i5", k=100)) == N_ITEMS - 1
    with pytest.raises(InputError, match="unknown item"):
        p.similar("nope")
    # the history view: cosine of the explained item to each distinct history item, never to itself
    e = p.explain([*HISTORY, B], B)
    assert B not in {i for i, _ in e.similar_history_items} and len(e.similar_history_items) == 3
    vecs = torch.nn.functional.normalize(p.model.all_item_vectors().detach().double(), dim=1)
    best_item, best_sim = e.similar_history_items[0]
    expected = float(vecs[p._item_idx[best_item]] @ vecs[p._item_idx[B]])
    assert best_sim == pytest.approx(expected)


def test_sentence_names_behaviours_in_plain_words():
    reasons = [("x", "view", 2.0), ("y", "buy", 1.5), ("z", "view", 0.9), ("w", "view", 0.1)]
    titles = {"x": "Red Lipstick", "y": "Nail Polish"}
    # z is named (0.9 ≥ a quarter of 2.0), w is not; items with the same behaviour share one verb
    assert ex.sentence(ex.NEXT_ITEM, "t", 1.0, reasons, titles) == (
        "Recommended because you viewed Red Lipstick and item z and bought Nail Polish."
    )
    assert ex.sentence("buy", "y", 0.4, [("y", "cart", 0.3)], {}) == (
        "P(buy) = 0.40 because you added it to your cart."
    )
    assert "no single past item" in ex.sentence(ex.NEXT_ITEM, "t", 1.0, [("x", "view", -0.5)], {})
    assert "no known history" in ex.sentence("buy", "t", 0.1, [], {})


def test_item_contributions_remove_all_events_of_an_item(p):
    """Repeated items: the item's value is the drop without all its events; the sentence names items."""
    history = ["i7", A, "i12", "i7", "i9", A]
    e = p.explain(history, B, top=None)
    full = p.score(history, [B])[0]
    by_item = dict(e.item_contributions)
    assert set(by_item) == {"i7", A, "i12", "i9"}
    for item, value in by_item.items():
        without = p.score([h for h in history if h != item], [B])[0]
        assert value == pytest.approx(full - without, abs=1e-4), item
    values = [v for _, v in e.item_contributions]
    assert values == sorted(values, reverse=True) and e.item_contributions[0][0] == A
    assert e.sentence.startswith("Recommended because you interacted with Alpha")
    # rollout: an item's value is the sum of its events' shares
    r = p.explain(history, B, method="rollout", top=None)
    a_shares = sum(c[3] for c in r.contributions if c[1] == A)
    assert dict(r.item_contributions)[A] == pytest.approx(a_shares)


@pytest.fixture(scope="module")
def funnel_dir(tmp_path_factory):
    from factories import funnel_dataset
    from nextaction.workflow import calibrate_model

    out = tmp_path_factory.mktemp("funnel_explain")
    data = funnel_dataset(n_users=80, length=20, seed=2)
    mc = ModelConfig(n_items=data.n_items, n_behaviors=len(data.behaviors), dim=16, behavior_head=True)
    tc = TrainConfig(epochs=2, batch_size=32, warmup_steps=5, precision="fp32", threads=1)
    model, _ = fit(data, mc, tc, out_dir=out)
    stage = calibrate_model(model, data, tc)  # the ranker and its calibration, as `train` saves them
    assert stage["behavior_ranker"] is not None
    save_model(out, model, tc, {"exclude_seen": False, **stage})
    data.save(out / "data")
    return out


def test_behaviour_explanations_are_probability_differences(funnel_dir):
    fp = Predictor.load(funnel_dir)
    history = fp.history("u3", split="all")[-8:]
    item = history[-1]["item_id"]
    e = fp.explain(history, item, behavior="buy", top=None)
    assert e.target == "buy" and e.sentence.startswith(f"P(buy) = {e.score:.2f}")
    assert e.score == pytest.approx(fp.predict(history, [item])[item]["buy"], abs=1e-5)
    for pos, _, _, value in e.contributions:
        without = fp.predict(history[:pos] + history[pos + 1 :], [item])[item]["buy"]
        assert value == pytest.approx(e.score - without, abs=1e-5)
    assert math.isclose(sum(abs(s) for s in e.shares), 1.0, rel_tol=1e-9)
    with pytest.raises(InputError, match="rollout explains the user state"):
        fp.explain(history, item, behavior="buy", method="rollout")
    with pytest.raises(InputError, match="the model knows: view, cart, buy"):
        fp.explain(history, item, behavior="fly")


def test_cli_explain_and_similar(ab_dir, capsys):
    code, out, err = run(["explain", str(ab_dir), "--user", "u1", "--item", B, "--k", "3", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["user"] == "u1" and doc["item_id"] == B and doc["title"] == "Beta"
    assert doc["method"] == "occlusion" and doc["target"] == "next item"
    assert len(doc["contributions"]) == 3
    assert set(doc["contributions"][0]) == {"position", "item_id", "title", "behavior", "value", "share"}
    assert set(doc["item_contributions"][0]) == {"item_id", "title", "value"}
    assert doc["sentence"].startswith("Recommended because you")

    code, out, err = run(["explain", str(ab_dir), "--user", "u1", "--item", B, "--method", "rollout"], capsys)
    assert code == 0, err
    assert "Recommended because you" in out

    code, out, err = run(["explain", str(ab_dir), "--user", "u1", "--item", "nope"], capsys)
    assert code == 2 and "unknown item 'nope'" in err and "Traceback" not in err

    code, out, err = run(["similar", str(ab_dir), "--item", "i3", "--k", "4", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["items"]) == 4 and "i3" not in {r["item_id"] for r in doc["items"]}
