"""User propensity: P(the user does b at all within a horizon) — horizons, examples that never read the
future, a stage that recovers known rates and picks the signals that carry information, the Predictor and
the HTTP route on a tiny trained model, and the evaluation in ``evaluate_dir``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from nextaction.behavior.candidates import ItemStats
from nextaction.behavior.propensity import (
    PropensityExamples,
    PropensityModel,
    PropensityStage,
    Windows,
    blocks,
    evaluate_propensity,
    fit_baseline,
    horizon_name,
    model_signals,
    n_head_signals,
    n_rfm_features,
    parse_horizon,
    propensity_examples,
    rfm_features,
    split_windows,
)
from nextaction.config import build
from nextaction.data.dataset import PreparedDataset, Sequences
from nextaction.data.schema import CLOCK_POSITIONS
from nextaction.errors import InputError
from nextaction.evaluation.metrics import auc, expected_calibration_error, paired_auc_difference
from nextaction.predictor import Predictor
from nextaction.server.app import ServeConfig, create_app
from nextaction.training.checkpoint import load_model
from nextaction.training.state import TrainConfig
from nextaction.workflow import calibrate_model, evaluate_dir
from serving import API_KEY, Server, tiny_model

DAY = 86_400_000
RATES = (0.1, 0.5, 0.9)  # P(buy within a day) of the three user groups
VIEWS = (1, 2, 4)  # views a day: the group is visible to the RFM counts
VIEW, BUY = 1, 2


# ---- horizons -------------------------------------------------------------------------------------------


def test_parse_horizon() -> None:
    assert parse_horizon("7d") == 7 * DAY
    assert parse_horizon("24h") == DAY
    assert parse_horizon(" 30m ") == 30 * 60_000
    assert parse_horizon("2w") == 14 * DAY
    assert parse_horizon("500ms") == 500
    assert parse_horizon(5000) == 5000  # an int is milliseconds
    assert parse_horizon("10e", clock=CLOCK_POSITIONS) == 10_000  # positions: p is stored as p × 1000 ms
    assert parse_horizon("10", clock=CLOCK_POSITIONS) == parse_horizon(10, clock=CLOCK_POSITIONS) == 10_000
    for bad in ("7x", "0d", "-1d", "d", "", True, 1.5):
        with pytest.raises(InputError):
            parse_horizon(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="number of events"):
        parse_horizon("7d", clock=CLOCK_POSITIONS)
    with pytest.raises(InputError, match="duration"):
        parse_horizon("10e")
    for name in ("7d", "3h", "90m", "45s", "10ms"):
        assert horizon_name(parse_horizon(name)) == name
    assert horizon_name(10_000, clock=CLOCK_POSITIONS) == "10e"


def test_windows_choose_horizons_the_windows_can_label() -> None:
    # IJCAI-15's shape: a day-granular log, a 3-day validation window, a 1-day test window
    day_log = Windows(
        valid_cutoff=0, test_cutoff=3 * DAY, test_end=4 * DAY, resolution=DAY, clock="timestamps"
    )
    assert day_log.fit_horizons() == [DAY]  # 7d and 30d need a longer validation window
    assert day_log.starts(DAY) == [0, DAY, 2 * DAY]  # every label window ends by the test cutoff
    assert day_log.default([DAY]) == DAY
    assert day_log.fit_horizons(["1h", "1d"]) == [DAY]  # finer than the log's grain: not a horizon
    # a month of validation, ten days of test: 7d is preferred; 30d is fitted (served) but not evaluable
    month = Windows(
        valid_cutoff=0, test_cutoff=30 * DAY, test_end=40 * DAY, resolution=1000, clock="timestamps"
    )
    assert month.fit_horizons() == [DAY, 7 * DAY, 30 * DAY]
    assert month.starts(7 * DAY) == [0, 10 * DAY, 20 * DAY] and month.starts(30 * DAY) == [0]
    assert month.default([DAY, 7 * DAY, 30 * DAY]) == 7 * DAY
    assert month.default([DAY, 30 * DAY]) == DAY
    # a validation window shorter than any ladder horizon: its own length
    short = Windows(
        valid_cutoff=0, test_cutoff=10_800_000, test_end=30_000_000, resolution=60_000, clock="timestamps"
    )
    assert short.fit_horizons() == [10_800_000] and horizon_name(10_800_000) == "3h"
    events = Windows(
        valid_cutoff=0, test_cutoff=20_000, test_end=40_000, resolution=1000, clock=CLOCK_POSITIONS
    )
    assert events.fit_horizons() == [1000, 10_000] and events.default([1000, 10_000]) == 10_000


# ---- a log with known rates ---------------------------------------------------------------------------


def rates_log(*, per_group: int = 1000, days: int = 28, seed: int = 0) -> tuple[Sequences, np.ndarray]:
    """Users of three groups: group g views VIEWS[g] random items a day and buys on a day with probability
    RATES[g], independently of everything else. Returns the sequences and each user's group (user 0, the
    padding user, has no events and group -1)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(3), per_group)
    items: list[np.ndarray] = []
    behaviors: list[np.ndarray] = []
    times: list[np.ndarray] = []
    lengths = [0]  # user 0 is the padding user
    for g in groups:
        ev_t, ev_b = [], []
        for d in range(days):
            n = VIEWS[g]
            ev_t.append(d * DAY + rng.integers(0, DAY // 1000, n) * 1000)
            ev_b.append(np.full(n, VIEW))
            if rng.random() < RATES[g]:
                ev_t.append(d * DAY + rng.integers(0, DAY // 1000, 1) * 1000)
                ev_b.append(np.array([BUY]))
        t, b = np.concatenate(ev_t), np.concatenate(ev_b)
        order = np.argsort(t, kind="stable")
        times.append(t[order])
        behaviors.append(b[order])
        items.append(rng.integers(1, 51, len(t)))
        lengths.append(len(t))
    seqs = Sequences.from_arrays(
        np.concatenate(items), np.concatenate(behaviors), np.concatenate(times), np.array(lengths)
    )
    return seqs, np.concatenate([[-1], groups])


@pytest.fixture(scope="module")
def rates() -> tuple[Sequences, np.ndarray]:
    return rates_log()


def _rfm_inputs(seqs: Sequences, starts: list[int], horizon: int) -> tuple[np.ndarray, PropensityExamples]:
    ex = propensity_examples(seqs, starts=starts, horizon_ms=horizon, n_behaviors=2)
    return rfm_features(seqs, ex.hist_start, ex.hist_end, ex.t0, horizon_ms=horizon, n_behaviors=2), ex


def test_calibrated_propensity_recovers_known_rates(rates) -> None:
    """Fitted on three window starts, tested on a later one: each group's mean probability is its rate."""
    seqs, groups = rates
    r = n_rfm_features(2)
    cols = {"rfm": slice(0, r), "head": slice(r, r), "state": slice(r, r)}  # no transformer here
    x_fit, fit_ex = _rfm_inputs(seqs, [20 * DAY, 21 * DAY, 22 * DAY], DAY)
    stage = PropensityStage.fit(
        x_fit,
        fit_ex.labels,
        fit_ex.user_idx,
        columns=cols,
        horizon_ms=DAY,
        horizon="1d",
        behaviors=["view", "buy"],
    )
    assert stage.features == ("base rate", "rfm")  # everyone views every day: one class
    x_test, test_ex = _rfm_inputs(seqs, [25 * DAY], DAY)
    p = stage.probabilities(x_test)
    assert np.allclose(p[:, 0], 1.0, atol=1e-3)
    buy, y = p[:, 1], test_ex.labels[:, 1]
    for g, rate in enumerate(RATES):
        in_group = groups[test_ex.user_idx] == g
        assert abs(buy[in_group].mean() - rate) < 0.04, (g, buy[in_group].mean())
    assert expected_calibration_error(buy, y) < 0.04
    assert auc(buy, y) > 0.75
    # the baselines are calibrated the same way (Platt on cross-fitted scores) and land as close
    for name in ("logreg", "gbm"):
        q = fit_baseline(name, x_fit[:, :r], fit_ex.labels, fit_ex.user_idx)(x_test[:, :r])[:, 1]
        assert expected_calibration_error(q, y) < 0.05, name
        assert abs(auc(q, y) - auc(buy, y)) < 0.03, name


def test_stage_uses_a_signal_only_where_it_carries_information(rates) -> None:
    """A "head" column that knows something the counts cannot (a noisy copy of the label) is chosen; a block
    of pure noise ("state") is not, and a behaviour with one class gets its base rate."""
    seqs, _ = rates
    x_rfm, ex = _rfm_inputs(seqs, [20 * DAY, 21 * DAY, 22 * DAY], DAY)
    rng = np.random.default_rng(1)
    hint = ex.labels[:, 1] + rng.normal(0, 1.0, len(ex))
    head = np.zeros((len(ex), 3))
    head[:, 0] = hint
    noise = rng.normal(size=(len(ex), 8))
    x = np.concatenate([x_rfm, head, noise], axis=1)
    r = x_rfm.shape[1]
    cols = {"rfm": slice(0, r), "head": slice(r, r + 3), "state": slice(r + 3, r + 11)}
    stage = PropensityStage.fit(
        x, ex.labels, ex.user_idx, columns=cols, horizon_ms=DAY, horizon="1d", behaviors=["view", "buy"]
    )
    assert stage.features == ("base rate", "rfm+head")
    assert np.count_nonzero(np.asarray(stage.coef)[1, r + 3 :]) == 0  # the noise block has no weight
    rfm_only = PropensityStage.fit(
        x, ex.labels, ex.user_idx, columns=cols, horizon_ms=DAY, horizon="1d", behaviors=["view", "buy"],
        options=[("rfm",)],
    )  # fmt: skip
    assert stage.cv_auc[1] > rfm_only.cv_auc[1] + 0.05
    # saved and loaded through config.json's dict, it answers the same
    back = PropensityStage.from_dict(json.loads(json.dumps(stage.to_dict())))
    assert np.allclose(back.probabilities(x[:50]), stage.probabilities(x[:50]))


def test_paired_auc_difference() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.3
    good = y + rng.normal(0, 0.8, 2000)
    bad = y + rng.normal(0, 3.0, 2000)
    users = np.repeat(np.arange(1000), 2)
    d = paired_auc_difference(good, bad, y, users, draws=100)
    assert d["diff"] == pytest.approx(auc(good, y) - auc(bad, y))
    assert 0 < d["lo"] < d["diff"] < d["hi"]
    same = paired_auc_difference(good, good, y, users, draws=20)
    assert same == {"diff": 0.0, "lo": 0.0, "hi": 0.0}


# ---- a tiny trained model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served tiny view/cart/buy model, without a propensity stage."""
    return tiny_model(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def model_dir(plain_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with the stages ``workflow.calibrate_model`` fits after training, in config.json."""
    out = tmp_path_factory.mktemp("propensity-model")
    for name in ("config.json", "model.safetensors"):
        (out / name).write_bytes((plain_dir / name).read_bytes())
    PreparedDataset.load(plain_dir / "data").save(out / "data")
    model, config = load_model(out)
    data = PreparedDataset.load(out / "data")
    stage = calibrate_model(model, data, build(TrainConfig, config["train"], where="train"))
    assert stage["propensity"] is not None
    (out / "config.json").write_text(json.dumps({**config, **stage}))
    return out


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor.load(model_dir)


def test_fitted_stage_fits_the_validation_window(predictor: Predictor) -> None:
    prop = predictor.propensity_model
    win = split_windows(predictor.data)
    assert prop is not None and win is not None
    # this log's validation window is 3 hours: no ladder horizon fits, so the window's own length does
    assert prop.horizons == [horizon_name(win.valid_ms)] == [prop.default]
    stage = prop.stage()
    assert stage.behaviors == ("view", "cart", "buy")
    assert all(s + stage.horizon_ms <= win.test_cutoff for s in stage.starts)  # labels never read TEST
    width = n_rfm_features(3) + n_head_signals(3) + predictor.model.cfg.dim
    assert len(stage.mean) == width == blocks(3, predictor.model.cfg.dim)["state"].stop


def test_features_never_read_events_at_or_after_t0(predictor: Predictor) -> None:
    """Replace every event at or after t0 (items, behaviours, times): features and transformer signals —
    item statistics included — stay the same; the labels follow the new events."""
    data, model = predictor.data, predictor.model
    seqs = data.seqs
    win = split_windows(data)
    assert win is not None
    t0, h = win.valid_cutoff + 3_600_000, 3_600_000
    ts = np.asarray(seqs.timestamps)
    rng = np.random.default_rng(0)
    for trial in range(3):
        future = ts >= t0
        items = np.asarray(seqs.items).copy()
        behaviors = np.asarray(seqs.behaviors).copy()
        times = ts.copy()
        items[future] = rng.integers(1, data.n_items + 1, future.sum())
        behaviors[future] = rng.integers(1, 4, future.sum())
        lengths = np.diff(np.asarray(seqs.offsets))
        user = np.repeat(np.arange(len(lengths)), lengths)
        new_t = t0 + rng.integers(0, 5 * h, future.sum())
        # keep each user's events sorted: the future part, re-drawn, sorted within the user
        order = np.lexsort((new_t, user[future]))
        times[np.flatnonzero(future)] = new_t[order]
        other = replace(seqs, items=items, behaviors=behaviors, timestamps=times)
        out = []
        for s in (seqs, other):
            ex = propensity_examples(s, starts=[t0], horizon_ms=h, n_behaviors=3)
            rfm = rfm_features(s, ex.hist_start, ex.hist_end, ex.t0, horizon_ms=h, n_behaviors=3)
            stats = ItemStats(s, 3, exclude_split=None)
            sig = model_signals(model, s, ex.hist_start, ex.hist_end, ex.t0, stats=stats)
            out.append((ex, rfm, sig))
        (ex_a, rfm_a, sig_a), (ex_b, rfm_b, sig_b) = out
        assert np.any(ts == t0) and len(ex_a) > 100 and ex_b.labels.any()  # not vacuous
        assert np.array_equal(ex_a.user_idx, ex_b.user_idx)
        assert np.array_equal(rfm_a, rfm_b)
        assert np.allclose(sig_a, sig_b, atol=1e-5)
        in_window = future & (times < t0 + h)
        want = np.zeros((len(lengths), 3), bool)
        want[user[in_window], behaviors[in_window] - 1] = True
        assert np.array_equal(ex_b.labels, want[ex_b.user_idx]), trial


def test_predictor_propensity(predictor: Predictor) -> None:
    p = predictor
    history = p.history("u5", split="all")
    prob = p.propensity(history)
    assert 0.0 < prob < 1.0
    last = max(e["timestamp"] for e in history)
    assert p.propensity(history, at=last + 1) == prob  # the default window starts just after the last event
    assert p.propensity(history, behavior="buy", horizon=p.propensity_model.default) == prob
    # events at or after `at` do not count: a later history answers as the earlier one
    at = history[len(history) // 2]["timestamp"]
    before = [e for e in history if e["timestamp"] < at]
    assert p.propensity(history, at=at) == p.propensity(before, at=at)
    assert p.propensity(history, behavior="view") != prob
    assert p.propensity_target() == ("buy", p.propensity_model.stage())


def test_predictor_propensity_errors(predictor: Predictor, plain_dir: Path) -> None:
    p = predictor
    history = p.history("u5", split="all")
    with pytest.raises(InputError, match="unknown behavior 'nope'"):
        p.propensity(history, behavior="nope")
    with pytest.raises(InputError, match=f"fitted for {p.propensity_model.default}"):
        p.propensity(history, horizon="7d")
    with pytest.raises(InputError, match="bad horizon"):
        p.propensity(history, horizon="soon")
    with pytest.raises(InputError, match="no timestamp"):
        p.propensity([e["item_id"] for e in history])
    with pytest.raises(InputError, match="at least one event"):
        p.propensity([])
    with pytest.raises(InputError, match="at least one event"):
        p.propensity(history, at=history[0]["timestamp"])
    with pytest.raises(InputError, match="no propensity stage"):
        Predictor.load(plain_dir).propensity(history)


def test_evaluate_dir_reports_propensity_against_rfm_baselines(model_dir: Path) -> None:
    result = evaluate_dir(model_dir)["propensity"]
    prop = PropensityModel.from_dict(json.loads((model_dir / "config.json").read_text())["propensity"])
    assert prop is not None and result["horizon"] == prop.default
    assert set(result["baselines"]) == {"logreg", "gbm"}
    for scorer in (result["model"], *result["baselines"].values()):
        buy = scorer["buy"]
        assert 0.5 < buy["AUC"] <= 1.0 and buy["AUC_sd"] > 0 and 0 <= buy["ECE"] < 1
        assert buy["users"] == result["protocol"]["test_window"]["users"] and buy["positives"] > 0
    d = result["difference"]["buy"]
    assert d["against"] in ("logreg", "gbm") and d["lo"] <= d["diff"] <= d["hi"]
    best = result["baselines"][d["against"]]["buy"]["AUC"]
    assert d["diff"] == pytest.approx(result["model"]["buy"]["AUC"] - best)
    assert result["protocol"]["fit"]["examples"] > 0 and result["protocol"]["model_features"]["buy"]
    # `evaluate --users N`: a fixed sample of the test users, recorded
    model, _ = load_model(model_dir)
    sampled = evaluate_propensity(model, PreparedDataset.load(model_dir / "data"), prop, max_users=40)
    assert (
        sampled["model"]["buy"]["users"] <= 40 and sampled["protocol"]["test_window"]["sampled_from"] == 120
    )


# ---- the HTTP route -------------------------------------------------------------------------------------


def _client(model_dir: Path, tmp_path: Path) -> TestClient:
    cfg = ServeConfig(model_dir=str(model_dir), store=f"sqlite:///{tmp_path / 'events.db'}", api_key=API_KEY)
    return TestClient(create_app(cfg))


def test_propensity_route(model_dir: Path, predictor: Predictor, tmp_path: Path) -> None:
    client = _client(model_dir, tmp_path)
    history = predictor.history("u5", split="all")
    r = client.post("/propensity", json={"user_id": "u5"})  # the store is seeded with the model's events
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["behavior"] == "buy" and body["horizon"] == predictor.propensity_model.default
    assert body["history_length"] == len(history)
    assert body["probability"] == pytest.approx(predictor.propensity(history), abs=1e-6)
    r = client.post(
        "/propensity", json={"history": history, "behavior": "cart", "at": history[-1]["timestamp"]}
    )
    assert r.status_code == 200, r.text
    expected = predictor.propensity(history, behavior="cart", at=history[-1]["timestamp"])
    assert r.json()["probability"] == pytest.approx(expected, abs=1e-6)
    r = client.post("/propensity", json={"user_id": "u5", "horizon": "7d"})
    assert r.status_code == 400 and "fitted for" in r.json()["error"]
    assert client.post("/propensity", json={"user_id": "u5", "behavior": "nope"}).status_code == 400
    assert client.post("/propensity", json={"user_id": "nobody"}).status_code == 400  # no events
    assert client.post("/propensity", json={"user_id": "u5", "history": []}).status_code == 422
    assert client.post("/propensity", json={"user_id": "u5", "when": 1}).status_code == 422


def test_propensity_route_without_a_stage(plain_dir: Path, tmp_path: Path) -> None:
    r = _client(plain_dir, tmp_path).post("/propensity", json={"user_id": "u5"})
    assert r.status_code == 400 and "no propensity stage" in r.json()["error"]


def test_propensity_over_real_http(model_dir: Path, predictor: Predictor, tmp_path: Path) -> None:
    server = Server(model_dir, tmp_path / "events.db")
    try:
        r = httpx.post(server.url + "/propensity", json={"user_id": "u7", "behavior": "buy"}, timeout=30)
    finally:
        server.stop()
    assert r.status_code == 200, r.text
    expected = predictor.propensity(predictor.history("u7", split="all"))
    assert r.json()["probability"] == pytest.approx(expected, abs=1e-6)
