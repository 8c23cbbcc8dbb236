"""Question routing: rank users for an item and a behaviour; the test-window evaluation and its metrics."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from factories import HOUR_MS, cyclic_dataset, events_dataset, forum_dataset, with_events
from nextaction import Predictor
from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import BEHAVIOR_IDX, ITEM_IDX, SPLIT, TEST, TIMESTAMP, TRAIN, USER_IDX
from nextaction.errors import InputError
from nextaction.evaluation.metrics import MISS_RANK, multi_target_metrics
from nextaction.model import ModelConfig, NextActionModel
from nextaction.routing import (
    TrainedModel,
    evaluate_routing,
    random_metrics,
    relevant_ranks,
    route,
    routing_metrics,
    routing_task,
)
from nextaction.training.loop import fit
from nextaction.training.state import TrainConfig

STARS = ("u1", "u2", "u3")  # forum_dataset's topic stars: each answers ~90% of one topic's threads
ASK, ANSWER, COMMENT = 1, 2, 3


@pytest.fixture(scope="module")
def forum(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """A tiny model trained on the forum log, with the ranker and calibration ``train`` would save (~6 s)."""
    from nextaction.workflow import calibrate_model

    data = forum_dataset()
    mc = ModelConfig(
        n_items=data.n_items,
        n_behaviors=len(data.behaviors),
        dim=32,
        max_len=20,
        dropout=0.0,
        behavior_head=True,
    )
    tc = TrainConfig(
        epochs=20, batch_size=16, lr=5e-3, warmup_steps=5, patience=100, precision="fp32", threads=1
    )
    model, _ = fit(data, mc, tc, out_dir=tmp_path_factory.mktemp("forum"))
    stage = calibrate_model(model, data, tc)
    assert stage["behavior_ranker"] is not None
    return Predictor(model, {"exclude_seen": False, **stage}, data)


def cutoff_of(data: PreparedDataset) -> int:
    """The forum's test cutoff: its first TEST event."""
    return int(data.events.filter(pl.col(SPLIT) == TEST)[TIMESTAMP].min())


# ---- route ----------------------------------------------------------------------------------------------


def test_route_ranks_users_best_first(forum: Predictor) -> None:
    top = route(forum, "i100", behavior="answer", k=5)
    assert len(top) == 5 and len({u for u, _ in top}) == 5
    probs = [p for _, p in top]
    assert all(0.0 <= p <= 1.0 for p in probs) and probs == sorted(probs, reverse=True)
    # every user with an event is a candidate; k beyond them returns them all, the top k first
    everyone = route(forum, "i100", behavior="answer", k=10_000)
    assert len(everyone) == forum.data.events[USER_IDX].n_unique()
    assert everyone[:5] == top


def test_route_gives_predicts_probability_for_every_user(forum: Predictor) -> None:
    # the batched ranking is Predictor.predict for each user's whole history, one user at a time
    users = ["u1", "u5", "u20", "u33"]
    routed = dict(route(forum, "i100", behavior="answer", k=10, users=users))
    for u in users:
        alone = forum.predict(forum.history(u, split="all"), ["i100"])["i100"]
        assert alone is not None
        assert routed[u] == pytest.approx(alone["answer"], abs=2e-6), u


def test_users_restricts_the_candidates(forum: Predictor) -> None:
    everyone = dict(route(forum, "i42", behavior="comment", k=10_000))
    some = route(forum, "i42", behavior="comment", k=10, users=["u20", "u1", "u5", "u1"])
    assert sorted(u for u, _ in some) == ["u1", "u20", "u5"]  # the duplicate counts once
    for u, p in some:
        assert p == pytest.approx(everyone[u], abs=1e-6)  # the same score whatever the batch
    assert route(forum, "i42", behavior="comment", k=2, users=["u20", "u1", "u5"]) == some[:2]
    kept = route(forum, "i42", behavior="comment", k=10, users=["u20", "u1", "u5"], exclude=["u1", "zz"])
    assert [u for u, _ in kept] == [u for u, _ in some if u != "u1"]
    assert route(forum, "i42", behavior="comment", users=[]) == []
    assert route(forum, "i42", behavior="comment", users="u5") == [("u5", everyone["u5"])]  # one id
    # a model and its dataset without a Predictor: the same answer
    bare = TrainedModel.from_config(forum.model, forum.config, forum.data)
    assert route(bare, "i42", behavior="comment", k=10, users=["u20", "u1", "u5"]) == some


def test_as_of_reads_nothing_at_or_after_it(forum: Predictor) -> None:
    data = forum.data
    as_of = 80 * HOUR_MS + 1  # thread i81 has just been asked; its answers and comments are to come
    late = [
        (1, 81, ANSWER, as_of, TEST),  # at as_of exactly: not before it
        (2, 81, ANSWER, as_of + 60_000, TEST),
        (20, 81, COMMENT, as_of + 120_000, TEST),
        (4, 30, ANSWER, as_of + 5 * HOUR_MS, TEST),
        (data.n_users + 1, 81, COMMENT, as_of + 1, TEST),  # a new user, only after as_of
    ]
    later = Predictor(forum.model, forum.config, with_events(data, late))
    before = route(forum, "i81", behavior="answer", k=10_000, as_of=as_of)
    after = route(later, "i81", behavior="answer", k=10_000, as_of=as_of)
    assert [u for u, _ in after] == [u for u, _ in before]
    np.testing.assert_allclose([p for _, p in after], [p for _, p in before], rtol=0, atol=1e-7)
    assert f"u{data.n_users + 1}" not in {u for u, _ in after}
    # only users with an event before as_of are candidates; without as_of the later events do count
    active = data.events.filter(pl.col(TIMESTAMP) < as_of)[USER_IDX].n_unique()
    assert len(before) == active
    assert dict(route(forum, "i81", behavior="answer", k=10_000)) != dict(before)


def test_planted_answerers_rank_first(forum: Predictor) -> None:
    # the stars answer ~90% of their topic's threads, the experts ~25%, everyone else never: for every
    # thread asked in the test window, routed as of the cutoff, a star is the first choice
    data = forum.data
    cutoff = cutoff_of(data)
    asked = data.events.filter((pl.col(SPLIT) == TEST) & (pl.col(BEHAVIOR_IDX) == ASK))[ITEM_IDX].to_list()
    assert len(asked) >= 20
    firsts = [route(forum, f"i{i}", behavior="answer", k=1, as_of=cutoff)[0][0] for i in asked]
    assert set(firsts) <= set(STARS), firsts
    # a new user who answered every thread before the cutoff, three times as many as any star, is the
    # first choice for every one of them (no retraining: a user is their history)
    fan = data.n_users + 1
    planted = [(fan, k + 1, ANSWER, k * HOUR_MS + 300_000, TRAIN) for k in range(cutoff // HOUR_MS - 1)]
    with_fan = Predictor(forum.model, forum.config, with_events(data, planted))
    firsts = [route(with_fan, f"i{i}", behavior="answer", k=1, as_of=cutoff)[0][0] for i in asked]
    assert firsts == [f"u{fan}"] * len(asked)


def test_bad_requests(forum: Predictor) -> None:
    with pytest.raises(InputError, match="unknown item 'nope'"):
        route(forum, "nope", behavior="answer")
    with pytest.raises(InputError, match="unknown behavior 'fly'; the model knows: ask, answer, comment"):
        route(forum, "i1", behavior="fly")
    with pytest.raises(InputError, match="unknown behavior '<pad>'"):
        route(forum, "i1", behavior="<pad>")
    with pytest.raises(InputError, match="k must be at least 1"):
        route(forum, "i1", behavior="answer", k=0)
    with pytest.raises(InputError, match="unknown user 'nobody'"):
        route(forum, "i1", behavior="answer", users=["u1", "nobody"])
    with pytest.raises(InputError, match="as_of must be epoch milliseconds"):
        route(forum, "i1", behavior="answer", as_of="yesterday")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown behavior 'fly'"):
        evaluate_routing(forum, behavior="fly")
    with pytest.raises(InputError, match="unknown behavior 'owns'"):
        evaluate_routing(forum, behavior="answer", owner_behavior="owns")
    with pytest.raises(InputError, match="ks must be positive"):
        evaluate_routing(forum, behavior="answer", ks=(0,))


def test_a_model_without_head_or_a_split_without_cutoff_is_refused(forum: Predictor) -> None:
    data = cyclic_dataset()  # leave-one-out, one behaviour
    plain = NextActionModel(ModelConfig(n_items=data.n_items, n_behaviors=len(data.behaviors), dim=8))
    with pytest.raises(InputError, match="no behaviour head"):
        route(TrainedModel(model=plain, data=data), "i1", behavior="interact")
    headed = NextActionModel(
        ModelConfig(n_items=data.n_items, n_behaviors=len(data.behaviors), dim=8, behavior_head=True)
    )
    with pytest.raises(InputError, match="temporal split"):
        evaluate_routing(TrainedModel(model=headed, data=data), behavior="interact")
    no_test = forum.data.events.filter(pl.col(SPLIT) != TEST).select(
        USER_IDX, ITEM_IDX, BEHAVIOR_IDX, TIMESTAMP, SPLIT
    )
    quiet = events_dataset(
        no_test.rows(),
        n_users=forum.data.n_users,
        n_items=forum.data.n_items,
        behaviors=forum.data.behaviors,
        split_kind="temporal",
    )
    with pytest.raises(InputError, match="no test window"):
        evaluate_routing(TrainedModel(model=forum.model, data=quiet), behavior="answer")


# ---- the evaluation's parts: hand-made cases with known ranks --------------------------------------------


def test_relevant_ranks_by_hand() -> None:
    nan, inf = float("nan"), float("inf")
    scores = np.array(
        [
            [0.9, 0.5, 0.5, 0.1],  # relevant 1 and 3: a tie counts against (rank 2), then rank 3
            [0.2, 0.8, -inf, 0.4],  # relevant 0: a barred (-inf) user never ranks above
            [nan, 0.3, 0.3, 0.3],  # relevant 2: the NaN rival and both ties rank above
            [0.1, -inf, 0.2, 0.3],  # relevant 1 is barred itself: a miss
        ]
    )
    offsets = np.array([0, 2, 3, 4, 5])
    columns = np.array([1, 3, 0, 2, 1])
    assert relevant_ranks(scores, offsets, columns).tolist() == [2, 3, 2, 3, MISS_RANK]


def test_routing_metrics_by_hand() -> None:
    ranks = np.array([2, 3, 2])  # item 0: relevant at ranks 2 and 3; item 1: at rank 2
    offsets = np.array([0, 2, 3])
    m = routing_metrics(ranks, offsets, ks=(1, 3))
    ideal_two = 1.0 + 1.0 / np.log2(3.0)  # two relevant users at the top
    assert m["HR@1"] == 0.0 and m["NDCG@1"] == 0.0
    assert m["HR@3"] == 1.0
    assert m["NDCG@3"] == pytest.approx(((1 / np.log2(4)) / ideal_two + 1 / np.log2(4)) / 2)
    assert m["MRR@3"] == pytest.approx(1 / 3)
    # every relevant user at the top is perfect
    assert routing_metrics(np.array([1, 0, 0]), offsets, ks=(2,)) == {
        "HR@2": 1.0,
        "NDCG@2": 1.0,
        "MRR@2": 1.0,
    }


def test_random_expectation_is_the_mean_over_every_order() -> None:
    cases = [(5, 2), (4, 1), (3, 3)]  # (candidates, relevant) per item
    ks = (1, 2, 3, 6)
    expected = random_metrics(np.array([n for n, _ in cases]), np.array([r for _, r in cases]), ks=ks)
    per_item = []
    for n, r in cases:
        # every permutation of n candidates, the first r relevant: their positions are the ranks
        perms = list(itertools.permutations(range(n)))
        ranks = np.array([[p.index(c) for c in range(r)] for p in perms]).reshape(-1)
        offsets = np.arange(len(perms) + 1) * r
        per_item.append({m: v.mean() for m, v in multi_target_metrics(offsets, ranks, ks=ks).items()})
    for name, value in expected.items():
        assert value == pytest.approx(np.mean([d[name] for d in per_item]), abs=1e-12), name


def hand_forum() -> tuple[PreparedDataset, int]:
    """Thread i1 asked by u1 before the cutoff; in the test window u1 (self-answer), u2 (active before the
    cutoff) and u3 (no event before it) answer. Thread i2: asked by u4, no test answer. Cutoff = 100 s."""
    rows = [
        (1, 1, ASK, 10_000, TRAIN),
        (2, 2, COMMENT, 20_000, TRAIN),
        (4, 2, ASK, 5_000, TRAIN),
        (5, 2, COMMENT, 30_000, TRAIN),
        (1, 1, ANSWER, 100_000, TEST),
        (2, 1, ANSWER, 110_000, TEST),
        (3, 1, ANSWER, 120_000, TEST),
        (5, 2, COMMENT, 130_000, TEST),
    ]
    data = events_dataset(
        rows, n_users=5, n_items=2, behaviors=["<pad>", "ask", "answer", "comment"], split_kind="temporal"
    )
    return data, 100_000


def test_routing_task_counts_what_it_leaves_out() -> None:
    data, cutoff = hand_forum()
    task = routing_task(data, behavior=ANSWER, exclude_owner=True, owner_behavior=ASK)
    assert task.cutoff == cutoff
    assert task.users.tolist() == [1, 2, 4, 5]  # an event before the cutoff; u3 has none
    assert task.items.tolist() == [1]
    assert [int(task.users[c]) for c in task.columns] == [2]  # the self-answer and the newcomer are out
    assert task.counts == {
        "items_with_behavior": 1,
        "relevant_pairs": 3,
        "relevant_owner": 1,
        "relevant_without_history": 1,
    }
    assert task.barred.tolist() == [[0], [0]]  # u1 (column 0) is not a candidate for its own thread
    assert task.n_candidates.tolist() == [3]
    # the first-user rule finds the same asker here; keeping owners makes the self-answer relevant
    first = routing_task(data, behavior=ANSWER, exclude_owner=True, owner_behavior=None)
    assert first.barred.tolist() == task.barred.tolist()
    kept = routing_task(data, behavior=ANSWER, exclude_owner=False, owner_behavior=None)
    assert [int(kept.users[c]) for c in kept.columns] == [1, 2] and kept.barred.size == 0


# ---- the evaluation on the trained forum ------------------------------------------------------------------


def test_evaluate_routing(forum: Predictor) -> None:
    data = forum.data
    r = evaluate_routing(forum, behavior="answer", owner_behavior="ask", ks=(1, 5, 10), details=True)
    cutoff = cutoff_of(data)
    ev = data.events
    had_history = ev.filter(pl.col(TIMESTAMP) < cutoff)[USER_IDX].unique()
    askers = ev.filter(pl.col(BEHAVIOR_IDX) == ASK).select(ITEM_IDX, pl.col(USER_IDX).alias("asker"))
    relevant = (
        ev.filter((pl.col(SPLIT) == TEST) & (pl.col(BEHAVIOR_IDX) == ANSWER))
        .join(askers, on=ITEM_IDX)
        .filter(pl.col(USER_IDX).is_in(had_history.implode()) & (pl.col(USER_IDX) != pl.col("asker")))
        .unique([ITEM_IDX, USER_IDX])
    )
    assert r["items"] == relevant[ITEM_IDX].n_unique() == len(r["per_item"]) > 0
    p = r["protocol"]
    assert p["candidates"] == len(had_history) and p["relevant"] == relevant.height
    assert p["cutoff_ms"] == cutoff and "asker" in p["owner"]
    names = {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in (1, 5, 10)}
    assert set(r["baselines"]) == {"most_active", "item_similarity", "random"}
    for metrics in (r["metrics"], *r["baselines"].values()):
        assert set(metrics) == names and all(0.0 <= v <= 1.0 for v in metrics.values())
    # the stars answer most threads: the model finds them far more often than chance
    assert r["metrics"]["HR@5"] > 3 * r["baselines"]["random"]["HR@5"]
    # the evaluation's ranks are route's positions as of the cutoff, the asker excluded
    asker_of = dict(zip(askers[ITEM_IDX].to_list(), askers["asker"].to_list(), strict=True))
    for entry in r["per_item"][:3]:
        item = int(entry["item_id"][1:])
        ranked = route(
            forum, entry["item_id"], behavior="answer", k=10_000, as_of=cutoff, exclude=[f"u{asker_of[item]}"]
        )
        assert len(ranked) == entry["candidates"]
        position = {u: n for n, (u, _) in enumerate(ranked)}
        assert entry["relevant"] == {u: position[u] for u in entry["relevant"]}


def test_evaluate_routing_output_is_plain_json(forum: Predictor, tmp_path: Path) -> None:
    import json

    r = evaluate_routing(forum, behavior="comment", baselines=False)
    assert "baselines" not in r and "per_item" not in r
    assert "first user" in r["protocol"]["owner"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(r))
    assert json.loads(path.read_text()) == r


def test_route_and_evaluate_routing_from_the_command_line(
    forum: Predictor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nextaction route` and `evaluate --routing` read a saved model directory and agree with the API."""
    import json

    from nextaction.training.checkpoint import save_model
    from test_cli import run

    model_dir = tmp_path / "forum"
    tc = TrainConfig(epochs=1, precision="fp32")
    save_model(
        model_dir,
        forum.model,
        tc,
        {
            "exclude_seen": False,
            "behavior_ranker": forum.ranker.to_dict() if forum.ranker else None,
            "calibration": forum.calibration,
        },
    )
    forum.data.save(model_dir / "data")
    item = forum.data.items["item_id"][-1]
    code, out, _ = run(
        ["route", str(model_dir), "--item", item, "--behavior", "answer", "--k", "3", "--json"], capsys
    )
    assert code == 0
    got = [(u["user_id"], u["p"]) for u in json.loads(out)["users"]]
    want = Predictor.load(model_dir).route(item, behavior="answer", k=3)
    assert [u for u, _ in got] == [u for u, _ in want]
    code, out, _ = run(["route", str(model_dir), "--item", "nope", "--behavior", "answer"], capsys)
    assert code == 2
    code, out, _ = run(
        ["evaluate", str(model_dir), "--routing", "answer", "--owner-behavior", "ask", "--json"], capsys
    )
    routing = json.loads(out)["routing"]
    assert code == 0 and routing["items"] > 0 and "HR@10" in routing["metrics"]
