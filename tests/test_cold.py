"""The new-item offset: it lifts text-only items by exactly its value and follows the tolerance rule."""

from __future__ import annotations

import json

from factories import TEXT_SETS
from nextaction import Predictor
from nextaction.workflow import train_model


def test_new_item_offset_lifts_text_only_items_by_exactly_the_offset():
    import torch

    from nextaction.model import ModelConfig, NextActionModel

    torch.manual_seed(0)
    model = NextActionModel(ModelConfig(n_items=50, n_behaviors=2, dim=8, text_dim=4, fusion="id+text"))
    model.text_emb.normal_()
    model.has_id[40:] = 0.0  # items 40 … 50 are new
    model.eval()
    states = torch.randn(3, 8)
    before = model.score_all(states)
    assert model.output_embeddings().shape == (51, 8)  # no offset: no bias column
    model.new_item_offset.fill_(1.5)
    after = model.score_all(states)
    torch.testing.assert_close(after[:, 1:40], before[:, 1:40])
    torch.testing.assert_close(after[:, 40:], before[:, 40:] + 1.5)
    # every item as if new: text alone plus the offset
    text_only = model.output_states(states) @ model.output_embeddings(text_only=True).T
    expected = states @ model.text_proj(model.text_emb).T + 1.5
    torch.testing.assert_close(text_only[:, 1:], expected[:, 1:])


def test_new_item_offset_follows_the_tolerance_rule(shop, tmp_path, monkeypatch):
    """The fitted offset is the largest grid value whose validation NDCG@10 stays within the tolerance of
    the best; it is saved with the model and applies to items added later."""
    from nextaction.batches import select_users
    from nextaction.data.dataset import PreparedDataset
    from nextaction.text.cold import NEW_ITEM_OFFSETS
    from nextaction.training.loop import validation_users
    from nextaction.training.state import TrainConfig

    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cold"
    train_model(shop / "events.csv", out, items=shop / "items.csv", sets=TEXT_SETS, holdout_items=0.25)
    fitted = json.loads((out / "config.json").read_text())["new_item_offset"]
    curve = {float(c): v for c, v in fitted["valid_NDCG@10"].items()}
    assert sorted(curve) == [float(c) for c in NEW_ITEM_OFFSETS]
    best = max(curve.values())
    allowed = [c for c, v in curve.items() if v >= (1 - fitted["tolerance"]) * round(best, 5) - 1e-5]
    assert fitted["offset"] == max(allowed)
    # 80 users hold too few validation targets on the 8 cold items: new items are simulated
    assert fitted["evidence"] == "simulated new items"
    p = Predictor.load(out)
    assert float(p.model.new_item_offset) == fitted["offset"]
    # the rule is deterministic: refitting on the same validation users gives the same choice
    from nextaction.workflow import new_item_offset

    data = PreparedDataset.load(out / "data")
    tc = TrainConfig(**json.loads((out / "config.json").read_text())["train"])
    assert new_item_offset(p.model, data, tc, exclude_seen=True)["offset"] == fitted["offset"]
    validated, _ = validation_users(data, tc)
    assert validated is None or len(select_users(data.seqs, validated).offsets) > 1
