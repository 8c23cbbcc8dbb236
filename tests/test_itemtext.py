"""Item text fused into the model: text-only items are scored by topic, new items join without retraining,
and the cold-start protocol reports cold and warm targets separately."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nextaction import Predictor
from nextaction.itemtext import add_items
from nextaction.workflow import evaluate_dir, train_model

TOPICS = {
    "nail": ["nail polish", "nail lacquer", "nail varnish", "gel nail colour"],
    "boots": ["hiking boots", "trail boots", "mountain boots", "walking boots"],
    "coffee": ["coffee beans", "espresso roast", "arabica coffee", "ground coffee"],
    "dog": ["dog food", "puppy kibble", "dog treats", "canine dinner"],
}
ADJECTIVES = ["red", "classic", "premium", "small", "deluxe"]
SETS = ["model.dim=32", "model.max_len=10", "train.epochs=12", "train.precision=fp32", "train.batch_size=32"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """60 users, each browsing one topic; items named after their topic."""
    root = tmp_path_factory.mktemp("shop")
    rng = np.random.default_rng(0)
    items, by_topic = [], {}
    for topic, nouns in TOPICS.items():
        by_topic[topic] = []
        for n, noun in enumerate(nouns):
            for a, adj in enumerate(ADJECTIVES[:2]):
                item_id = f"{topic}{n}{a}"
                items.append((item_id, f"{adj} {noun}"))
                by_topic[topic].append(item_id)
    rows = ["user_id,item_id,timestamp"]
    for u in range(80):
        topic = list(TOPICS)[u % 4]
        for t in range(9):
            rows.append(f"u{u},{rng.choice(by_topic[topic])},{1_700_000_000 + u * 10_000 + t * 60}")
    (root / "events.csv").write_text("\n".join(rows) + "\n")
    (root / "items.csv").write_text("item_id,title\n" + "\n".join(f"{i},{t}" for i, t in items) + "\n")
    return root


def test_text_model_scores_new_items_by_topic(shop, tmp_path, monkeypatch):
    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "m"
    train_model(shop / "events.csv", out, items=shop / "items.csv", sets=SETS)
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
    result = train_model(shop / "events.csv", out, items=shop / "items.csv", sets=SETS, holdout_items=0.25)
    assert result["cold"]["users"] > 0 and result["warm"]["users"] > 0
    assert result["cold"]["users"] + result["warm"]["users"] == result["protocol"]["users_evaluated"]
    report = json.loads((out / "data" / "report.json").read_text())
    assert report["holdout_items"]["items"] == 8 and report["holdout_items"]["train_events_removed"] > 0
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
    train_model(shop / "events.csv", out, sets=[*SETS[:3], "train.epochs=1"])
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
    from nextaction.train import NEW_ITEM_OFFSETS, TrainConfig, validation_users

    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cold"
    train_model(shop / "events.csv", out, items=shop / "items.csv", sets=SETS, holdout_items=0.25)
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


def test_id_text_models_default_to_the_shorter_schedule(shop, tmp_path, monkeypatch):
    from nextaction.train import TEXT_MODEL_EPOCHS, TrainConfig

    monkeypatch.setenv("NEXTACTION_CACHE", str(tmp_path / "cache"))
    base = [s for s in SETS if not s.startswith("train.epochs")] + ["train.patience=2"]
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
