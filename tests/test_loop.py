import json

import numpy as np
import pytest
import torch

from factories import cyclic_dataset, small_cfgs
from nextaction.batches import select_users, training_sequences
from nextaction.data.schema import TEST, VALID
from nextaction.evaluation.metrics import ranking_metrics
from nextaction.model import ModelConfig, NextActionModel
from nextaction.scoring import evaluate_model
from nextaction.training.loop import fit, lr_at
from nextaction.training.state import TrainConfig


def test_tiny_model_overfits_tiny_log(tmp_path):
    data = cyclic_dataset(n_users=60, n_items=40, length=10)
    mc, tc = small_cfgs(data)
    model, state = fit(data, mc, tc, out_dir=tmp_path)
    ranks, _ = evaluate_model(model, data.seqs, split=TEST, exclude_seen=True)
    m = ranking_metrics(ranks, ks=(1, 10))
    assert m["HR@10"] == 1.0
    assert m["HR@1"] > 0.9
    assert state.best_ndcg > 0.9
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == state.epoch and "valid_NDCG@10" in json.loads(lines[0])


def test_resume_equals_uninterrupted_run(tmp_path):
    data = cyclic_dataset(n_users=30, n_items=20, length=8)
    mc, tc = small_cfgs(data, epochs=4, patience=10)
    full, _ = fit(data, mc, tc, out_dir=tmp_path / "full")
    # "interrupted" after 2 epochs, then resumed to 4
    mc2, tc2 = small_cfgs(data, epochs=2, patience=10)
    fit(data, mc2, tc2, out_dir=tmp_path / "part")
    # resume reads the epoch-2 state and continues with the full schedule
    resumed, st = fit(data, mc, tc, out_dir=tmp_path / "part", resume=True)
    assert st.epoch == 4
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(100, 100, cfg) == pytest.approx(0.1)


def test_sparse_item_table_trains_learns_and_resumes_exactly(tmp_path):
    """Sampled loss on a plain ID model: the item table gets sparse gradients and SparseAdam (auto)."""
    from dataclasses import replace

    from nextaction.training.loop import Optimizers, make_optimizer, use_sparse_items

    data = cyclic_dataset(n_users=30, n_items=20, length=8)
    mc, tc = small_cfgs(data, epochs=4, patience=10)
    tc = replace(tc, loss="sampled", n_negatives=8)
    model = NextActionModel(mc)
    assert use_sparse_items(model, tc, distributed=False)
    assert not use_sparse_items(model, replace(tc, loss="full"), distributed=False)
    assert not use_sparse_items(model, tc, distributed=True)
    assert isinstance(make_optimizer(model, tc, sparse=True), Optimizers) and model.item_emb.sparse

    full, _ = fit(data, mc, tc, out_dir=tmp_path / "full")
    ranks, _ = evaluate_model(full, data.seqs, split=TEST, exclude_seen=True)
    assert (ranks < 10).mean() > 0.5  # it learns the cycle
    fit(data, mc, replace(tc, epochs=2), out_dir=tmp_path / "part")
    resumed, st = fit(data, mc, tc, out_dir=tmp_path / "part", resume=True)
    assert st.epoch == 4
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_validation_holdout_learns_the_other_users_validation_events(tmp_path):
    from nextaction.training.loop import validation_users

    data = cyclic_dataset(n_users=40, n_items=30, length=8)
    validated, learned = validation_users(data, TrainConfig(valid_holdout=10))
    assert len(validated) == 10 and (np.diff(validated) > 0).all()
    split = np.asarray(data.seqs.split)
    lengths = np.diff(np.asarray(data.seqs.offsets))
    user = np.repeat(np.arange(len(lengths)), lengths)
    # exactly the validation events of the 30 users outside the sample; never a test event
    assert learned.sum() == 30
    assert (split[learned] == VALID).all()
    assert not np.isin(user[learned], validated).any()
    seqs = training_sequences(data.seqs, also=learned)
    assert len(seqs.items) == 40 * 6 + 30 and not (np.asarray(seqs.split) == TEST).any()
    # the validation metric is computed on the sample only: it equals the sample's NDCG@10, measured here
    mc, tc = small_cfgs(data, epochs=1, valid_holdout=10)
    model, state = fit(data, mc, tc, out_dir=tmp_path)
    assert state.learned_valid_events == 30
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["valid_NDCG@10"]
    ranks, _ = evaluate_model(model, select_users(data.seqs, validated), split=VALID, exclude_seen=True)
    assert len(ranks) == 10
    assert logged == pytest.approx(ranking_metrics(ranks, ks=(10,))["NDCG@10"], abs=1e-9)


def test_validation_holdout_is_off_for_temporal_splits_and_small_logs():
    from nextaction.training.loop import validation_users

    data = cyclic_dataset(n_users=40, n_items=30, length=8)
    assert validation_users(data, TrainConfig(valid_holdout=40)) == (None, None)  # everyone validated
    assert validation_users(data, TrainConfig(valid_holdout=0)) == (None, None)
    temporal = type(data)(
        events=data.events,
        users=data.users,
        items=data.items,
        behaviors=data.behaviors,
        report={"split": {"kind": "temporal"}},
    )
    assert validation_users(temporal, TrainConfig(valid_holdout=10)) == (None, None)
    # a validation budget alone samples the validated users but learns nothing from the rest
    validated, learned = validation_users(temporal, TrainConfig(valid_users=10))
    assert len(validated) == 10 and learned is None


def test_validation_holdout_never_learns_cold_items():
    import polars as pl

    from nextaction.data.schema import COLD, ITEM_IDX
    from nextaction.training.loop import validation_users

    data = cyclic_dataset(n_users=40, n_items=30, length=8)
    cold = [1, 2, 3]
    items = data.items.with_columns(pl.col(ITEM_IDX).is_in(cold).alias(COLD))
    data = type(data)(
        events=data.events, users=data.users, items=items, behaviors=data.behaviors, report=data.report
    )
    _, learned = validation_users(data, TrainConfig(valid_holdout=10))
    assert learned.sum() > 0
    assert not np.isin(np.asarray(data.seqs.items)[learned], cold).any()


def test_with_learned_validation_events_the_head_is_validated_on_held_out_users_only(tmp_path, monkeypatch):
    """Leave-one-out + valid_holdout + behaviour head: the early-stopping AUC reads the validated users'
    windows only, and the item statistics count exactly the trained events (never those windows)."""
    from factories import funnel_dataset
    from nextaction.training import loop
    from nextaction.training.loop import validation_users

    data = funnel_dataset(n_users=60, length=12, seed=3)
    data.report = {"split": {"kind": "leave_one_out"}}
    seen: dict[str, object] = {}
    real_stats, real_cands = loop.ItemStats, loop.window_candidates

    def stats_spy(seqs, nb, **kw):
        seen["stats"] = (seqs, kw)
        return real_stats(seqs, nb, **kw)

    def cands_spy(seqs, **kw):
        seen["users"] = kw.get("users")
        return real_cands(seqs, **kw)

    monkeypatch.setattr(loop, "ItemStats", stats_spy)
    monkeypatch.setattr(loop, "window_candidates", cands_spy)
    mc = ModelConfig(n_items=data.n_items, n_behaviors=len(data.behaviors), dim=16, behavior_head=True)
    tc = TrainConfig(epochs=1, batch_size=32, warmup_steps=5, precision="fp32", valid_holdout=20)
    fit(data, mc, tc, out_dir=tmp_path)
    validated, learned = validation_users(data, tc)
    assert np.array_equal(seen["users"], validated)
    counted, kw = seen["stats"]
    assert kw == {"exclude_split": None}
    expected = training_sequences(data.seqs, also=learned)
    assert len(counted.items) == len(expected.items) and not (np.asarray(counted.split) == TEST).any()
    n_validated_valid = int(
        np.isin(np.repeat(np.arange(data.seqs.n_users), np.diff(data.seqs.offsets)), validated)[
            np.asarray(data.seqs.split) == VALID
        ].sum()
    )
    assert len(counted.items) == int((np.asarray(data.seqs.split) != TEST).sum()) - n_validated_valid
