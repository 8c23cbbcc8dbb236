"""Item text fused into the model: text-only items are scored by topic, new items join without retraining,
and the cold-start protocol reports cold and warm targets separately."""

from __future__ import annotations

import json

import pytest

from factories import TEXT_SETS
from nextaction import Predictor
from nextaction.text.items import add_items
from nextaction.workflow import evaluate_dir, train_model


def test_text_model_scores_new_items_by_topic(shop, tmp_path, monkeypatch):
    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "m"
    train_model(shop / "events.csv", out, items=shop / "items.csv", sets=TEXT_SETS)
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["fusion"] == "id+text" and config["model"]["text_dim"] == 384
    assert config["text"]["items"] == 32

    (tmp_path / "new.csv").write_text(
        "item_id,title\nnew_nail,glossy crimson nail polish\nnew_boot,waterproof hiking boots\nnail00,dup\n"
    )
    result = add_items(out, tmp_path / "new.csv")
    assert result["added"] == 2 and result["already_known"] == 1

    p = Predictor.load(out)
    assert p.data.n_items == 34
    nail_user = p.history("u0", split="all")  # users u0, u4, … browse nail products
    boot_user = p.history("u1", split="all")
    s_nail = p.score(nail_user, ["new_nail", "new_boot"])
    s_boot = p.score(boot_user, ["new_nail", "new_boot"])
    assert s_nail[0] > s_nail[1] and s_boot[1] > s_boot[0]  # each new item wins with its own topic's users
    top = [i for i, _ in p.recommend(nail_user, k=10, exclude_seen=False)]
    assert "new_nail" in top  # recommendable at once, no retraining


def test_cold_start_protocol_reports_cold_and_warm(shop, tmp_path, monkeypatch):
    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cold"
    result = train_model(
        shop / "events.csv", out, items=shop / "items.csv", sets=TEXT_SETS, holdout_items=0.25
    )
    assert result["cold"]["users"] > 0 and result["warm"]["users"] > 0
    # the users whose target is a held-out item the offset was fitted on count in neither group
    n = result["cold"]["users"] + result["warm"]["users"] + result["cold_fit_users"]
    assert n == result["protocol"]["users_evaluated"]
    report = json.loads((out / "data" / "report.json").read_text())
    assert report["holdout_items"]["items"] == 8 and report["holdout_items"]["train_events_removed"] > 0
    assert report["holdout_items"]["offset_fit_items"] == 4
    # held-out items never appear in training, so the model marks them as text-only
    p = Predictor.load(out)
    cold = set(p.data.items.filter(p.data.items["cold"])["item_id"].to_list())
    has_id = p.model.has_id.numpy()
    idx = p.data.item_index()
    assert all(has_id[idx[i]] == 0 for i in cold)
    again = evaluate_dir(out)
    assert again["cold"] == result["cold"]
    # text-only cold items are far from chance (1 in 32): the topic carries them
    assert result["cold"]["HR@10"] > 0.3


def test_items_add_needs_a_text_model(shop, tmp_path):
    out = tmp_path / "idonly"
    train_model(shop / "events.csv", out, sets=[*TEXT_SETS[:3], "train.epochs=1"])
    from nextaction.errors import InputError

    with pytest.raises(InputError, match="without item text"):
        add_items(out, shop / "items.csv")


def test_id_dropout_hides_ids_in_training_only():
    import torch

    from nextaction.model import ModelConfig, NextActionModel

    torch.manual_seed(0)
    model = NextActionModel(
        ModelConfig(n_items=200, n_behaviors=2, dim=8, text_dim=4, fusion="id+text", id_dropout=0.3)
    )
    model.text_emb.normal_()
    with torch.no_grad():
        model.item_emb.weight.normal_()  # as if trained (they start at zero)
    items = torch.arange(1, 201)
    full = model.item_vectors(items)
    text_only = model.text_proj(model.text_emb[items])
    model.train()
    model.sample_id_dropout(torch.Generator().manual_seed(1))
    dropped = model.item_vectors(items)
    hidden = (dropped - text_only).abs().sum(-1) < 1e-6
    assert 0.15 < hidden.float().mean() < 0.45  # about id_dropout = 0.3 of the items are text-only
    assert torch.allclose(dropped[~hidden], full[~hidden])
    model.eval()
    assert torch.allclose(model.item_vectors(items), full)  # evaluation always uses every learned ID


def test_text_models_start_from_the_text():
    import torch

    from nextaction.model import ModelConfig, NextActionModel

    torch.manual_seed(0)
    cfg = ModelConfig(n_items=500, n_behaviors=2, dim=16, text_dim=32, fusion="id+text")
    model = NextActionModel(cfg)
    model.text_emb.copy_(torch.nn.functional.normalize(torch.randn(501, 32), dim=1))  # unit norm, as encoded
    assert model.item_emb.weight.abs().max() == 0  # IDs learn only what the text misses
    items = torch.arange(1, 501)
    vectors = model.item_vectors(items)
    torch.testing.assert_close(vectors, model.text_proj(model.text_emb[items]))
    # the projected text starts at the scale ID embeddings start at in an ID-only model
    assert abs(vectors.std().item() - cfg.emb_init_std) < 0.15 * cfg.emb_init_std
    id_only = NextActionModel(ModelConfig(n_items=500, n_behaviors=2, dim=16))
    assert abs(id_only.item_vectors(items).std().item() - cfg.emb_init_std) < 0.15 * cfg.emb_init_std


def test_id_text_models_default_to_the_shorter_schedule(shop, tmp_path, monkeypatch):
    from nextaction.training.state import TEXT_MODEL_EPOCHS, TrainConfig

    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "cache"))
    base = [s for s in TEXT_SETS if not s.startswith("train.epochs")] + ["train.patience=2"]
    train_model(shop / "events.csv", tmp_path / "text", items=shop / "items.csv", sets=base)
    config = json.loads((tmp_path / "text" / "config.json").read_text())
    assert config["train"]["epochs"] == TEXT_MODEL_EPOCHS < TrainConfig().epochs
    # an explicit setting wins, and ID-only models keep the long schedule
    train_model(
        shop / "events.csv", tmp_path / "set", items=shop / "items.csv", sets=[*base, "train.epochs=3"]
    )
    assert json.loads((tmp_path / "set" / "config.json").read_text())["train"]["epochs"] == 3
    train_model(shop / "events.csv", tmp_path / "id", sets=[*base, "train.max_minutes=0.001"])
    assert (
        json.loads((tmp_path / "id" / "config.json").read_text())["train"]["epochs"] == TrainConfig().epochs
    )
