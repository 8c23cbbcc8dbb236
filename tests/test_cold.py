"""The new-item offset: it lifts registered new items only, by exactly its value; it is chosen by the
tolerance rule on validation users whose targets are not the items it is tested on."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import torch

from factories import TEXT_SETS
from nextaction.batches import select_users
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import COLD, COLD_FIT, ITEM_IDX, TEST, TRAIN, VALID
from nextaction.evaluation.metrics import ranking_metrics
from nextaction.evaluation.ranking import eval_examples
from nextaction.model import ModelConfig, NextActionModel
from nextaction.scoring import evaluate_model
from nextaction.text import cold
from nextaction.text.cold import NEW_ITEM_OFFSETS, first_seen_in, scored_as
from nextaction.training.checkpoint import load_model
from nextaction.workflow import train_model


def test_the_offset_lifts_registered_new_items_only_by_exactly_its_value():
    torch.manual_seed(0)
    model = NextActionModel(ModelConfig(n_items=50, n_behaviors=2, dim=8, text_dim=4, fusion="id+text"))
    model.text_emb.normal_()
    model.has_id[40:] = 0.0  # items 40 … 50 had no training events (in a log: they appear later) …
    model.is_new[45:] = 1.0  # … and only 45 … 50 were registered as new
    model.eval()
    states = torch.randn(3, 8)
    before = model.score_all(states)
    assert model.output_embeddings().shape == (51, 8)  # no offset: no bias column
    model.new_item_offset.fill_(1.5)
    after = model.score_all(states)
    torch.testing.assert_close(after[:, 1:45], before[:, 1:45])  # untrained but not registered: no lift
    torch.testing.assert_close(after[:, 45:], before[:, 45:] + 1.5)
    # every item as if new: text alone plus the offset
    text_only = model.output_states(states) @ model.output_embeddings(text_only=True).T
    expected = states @ model.text_proj(model.text_emb).T + 1.5
    torch.testing.assert_close(text_only[:, 1:], expected[:, 1:])


def test_the_offset_is_chosen_by_the_tolerance_rule_away_from_the_tested_items(shop, tmp_path, monkeypatch):
    """With held-out items: they alone are registered new; the offset's validation curve is measured on
    users whose validation target is not a tested cold item, and the chosen offset is the largest whose
    NDCG@10 stays within the tolerance of the best: checked against a curve measured here, independently."""
    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cold, "MIN_NEW_TARGETS", 1)  # the real held-out items are the evidence
    fitted_on: list[Sequences] = []
    real_fit = cold.fit_new_item_offset

    def spy(model, valid_seqs, **kw):
        fitted_on.append(valid_seqs)
        return real_fit(model, valid_seqs, **kw)

    monkeypatch.setattr(cold, "fit_new_item_offset", spy)
    out = tmp_path / "cold"
    result = train_model(
        shop / "events.csv", out, items=shop / "items.csv", sets=TEXT_SETS, holdout_items=0.25
    )
    data = PreparedDataset.load(out / "data")
    model, config = load_model(out)
    held = data.items.filter(pl.col(COLD))
    tested = held.filter(~pl.col(COLD_FIT))[ITEM_IDX].to_numpy()
    fit_items = held.filter(pl.col(COLD_FIT))[ITEM_IDX].to_numpy()
    assert len(tested) and len(fit_items) and not np.intersect1d(tested, fit_items).size
    # registered new = the held-out items, nothing else (not the items whose only events are later)
    assert set(np.flatnonzero(model.is_new.numpy())) == set(held[ITEM_IDX].to_list())

    (seqs,) = fitted_on
    targets = eval_examples(seqs, split=VALID).target
    assert not np.isin(targets, tested).any()  # no evidence from the items the offset is tested on
    fitted = config["new_item_offset"]
    assert fitted["evidence"].endswith("validation targets on new items")
    curve = []
    for c in NEW_ITEM_OFFSETS:
        with scored_as(model, offset=float(c)):
            ranks, _ = evaluate_model(model, seqs, split=VALID, exclude_seen=True, k_top=0)
        curve.append(ranking_metrics(ranks, ks=(10,))["NDCG@10"])
    saved = [fitted["valid_NDCG@10"][f"{c:g}"] for c in NEW_ITEM_OFFSETS]
    np.testing.assert_allclose(saved, curve, atol=1e-5)
    best = max(curve)
    expected = max(
        c for c, v in zip(NEW_ITEM_OFFSETS, curve, strict=True) if v >= (1 - fitted["tolerance"]) * best
    )
    assert fitted["offset"] == expected
    # the evaluation reports the tested cold items at offset 0 beside the fitted offset, fit items apart
    assert set(result["at_offset_0"]) == {COLD, "warm"}
    assert result["cold"]["users"] + result["warm"]["users"] + result["cold_fit_users"] == len(
        eval_examples(data.seqs, split=TEST)
    )
    if fitted["offset"] == 0:
        assert result["at_offset_0"][COLD] == result[COLD]


def test_a_model_saved_before_registration_registers_the_items_added_to_it(shop, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "m"
    train_model(shop / "events.csv", out, items=shop / "items.csv", sets=[*TEXT_SETS, "train.epochs=1"])
    data = PreparedDataset.load(out / "data")
    n = data.n_items
    weights = load_file(out / "model.safetensors")
    assert weights["is_new"].sum() == 0
    # as `items add` left an old model: one more catalogue row without events, and no is_new buffer
    grown = {k: (torch.cat([v, v[-1:]]) if v.shape[:1] == (n + 1,) else v) for k, v in weights.items()}
    del grown["is_new"]
    save_file(grown, str(out / "model.safetensors"))
    config = json.loads((out / "config.json").read_text())
    config["model"]["n_items"] = n + 1
    (out / "config.json").write_text(json.dumps(config))
    model, _ = load_model(out)
    assert np.flatnonzero(model.is_new.numpy()).tolist() == [n + 1]


def test_items_first_seen_after_a_cutoff():
    seqs = Sequences.from_arrays(
        np.array([1, 2, 3, 2, 4, 5]), np.ones(6), np.arange(6) * 1000, np.array([3, 3])
    )
    split = np.array([TRAIN, TRAIN, TEST, VALID, TEST, TEST], dtype=np.int8)
    seqs = Sequences(seqs.offsets, seqs.items, seqs.behaviors, seqs.timestamps, split)
    assert first_seen_in(seqs, TEST, 5).tolist() == [3, 4, 5]
    assert first_seen_in(seqs, VALID, 5).tolist() == []  # item 2 was seen in training
    assert select_users(seqs, np.array([1])).items.tolist() == [2, 4, 5]
