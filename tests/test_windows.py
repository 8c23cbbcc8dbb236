"""Rolling-origin evaluation: windows partition the test period, and nothing at or after a window's start
reaches its histories or item statistics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import events_dataset, funnel_dataset
from nextaction.behavior.baselines import BehaviorPopularity, RepeatBehavior
from nextaction.behavior.candidates import counts_before_window, window_candidates, window_popularity
from nextaction.behavior.evaluation import eval_setup
from nextaction.behavior.windows import evaluate_windows, rolling_windows, window_view
from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import (
    TEST,
    TIMESTAMP,
    TRAIN,
    VALID,
)
from nextaction.errors import InputError

N_ITEMS = 8


def random_log(events: list[tuple[int, int, int, int]], test_cut: int, valid_cut: int) -> PreparedDataset:
    """A temporal-split dataset from (user 1…, item 1…, behaviour 1…3, time) tuples."""
    rows = [
        (u, i, b, t, TEST if t >= test_cut else VALID if t >= valid_cut else TRAIN) for u, i, b, t in events
    ]
    return events_dataset(
        rows,
        n_users=max(u for u, *_ in events),
        n_items=N_ITEMS,
        behaviors=["<pad>", "view", "cart", "buy"],
        split_kind="temporal",
    )


logs = st.lists(
    st.tuples(
        st.integers(1, 6),
        st.integers(1, N_ITEMS),
        st.integers(1, 3),
        st.integers(0, 30).map(lambda d: d * 1000),
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=60, deadline=None)
@given(events=logs, k=st.integers(1, 4))
def test_no_event_at_or_after_a_window_start_reaches_its_history_or_statistics(events, k):
    """Property over generated logs (ties in time included): windows partition the test events in order;
    each window's view holds nothing at or after its end; every candidate history ends before the window's
    start; item statistics count exactly the events before the start."""
    data = random_log(events, test_cut=18_000, valid_cut=12_000)
    times, split = np.asarray(data.seqs.timestamps), np.asarray(data.seqs.split)
    test_times = times[split == TEST]
    if len(np.unique(test_times)) < k:
        with pytest.raises(InputError, match="distinct timestamps" if len(test_times) else "no test events"):
            rolling_windows(data.seqs, k)
        return
    windows = rolling_windows(data.seqs, k)
    assert len(windows) == k
    assert windows[0].start == test_times.min() and windows[-1].end == test_times.max() + 1
    covered = 0
    for a, b in itertools.pairwise(windows):
        assert a.end == b.start and a.start < a.end
    for w in windows:
        inside = (test_times >= w.start) & (test_times < w.end)
        assert inside.any()
        covered += int(inside.sum())
        view = window_view(data, w)
        vt, vs = np.asarray(view.seqs.timestamps), np.asarray(view.seqs.split)
        assert (vt < w.end).all()
        assert ((vs == TEST) == (vt >= w.start)).all()
        assert int((vs == TEST).sum()) == int(inside.sum())
        assert len(view.events) == len(vt) and (view.events[TIMESTAMP].to_numpy() == vt).all()
        cands = window_candidates(
            view.seqs, split=TEST, n_behaviors=3, popularity=window_popularity(view, TEST), ratio=2
        )
        for s, e in zip(cands.hist_start, cands.hist_end, strict=True):
            assert (vt[s:e] < w.start).all()
            assert np.searchsorted(view.seqs.offsets, s, side="right") == np.searchsorted(
                view.seqs.offsets, e - 1, side="right"
            )  # one user's span
        before = times < w.start
        expected = np.zeros((N_ITEMS + 1, 3))
        np.add.at(
            expected,
            (np.asarray(data.seqs.items)[before], np.asarray(data.seqs.behaviors)[before] - 1),
            1.0,
        )
        assert (counts_before_window(view.seqs, N_ITEMS, 3) == expected).all()
    assert covered == len(test_times)


def test_windows_have_about_equal_event_counts():
    data = funnel_dataset(n_users=120)
    windows = rolling_windows(data.seqs, 3)
    t = np.asarray(data.seqs.timestamps)[np.asarray(data.seqs.split) == TEST]
    sizes = [int(((t >= w.start) & (t < w.end)).sum()) for w in windows]
    assert sum(sizes) == len(t)
    assert max(sizes) - min(sizes) <= 0.2 * len(t) / 3


def test_scorers_take_statistics_as_of_each_window():
    data = funnel_dataset(n_users=80)
    setup = eval_setup(data)
    pop = BehaviorPopularity().fit(data, train=setup.valid)
    for w in rolling_windows(data.seqs, 3):
        view = window_view(data, w)
        pop.as_of(view.seqs)
        ref = counts_before_window(view.seqs, data.n_items, 3)
        cands = window_candidates(
            view.seqs, split=TEST, n_behaviors=3, popularity=window_popularity(view, TEST)
        )
        scores = pop.behavior_scores(view.seqs, cands)
        # more buys before the window's start = a higher buy score, whatever TRAIN alone said
        buys = ref[cands.items, 2]
        hi, lo = buys.argmax(), buys.argmin()
        if buys[hi] > buys[lo]:
            assert scores[hi, 2] > scores[lo, 2]


def test_evaluate_windows_pools_and_pairs_the_differences():
    """On the funnel shop a carted item is always bought: repeat-recent must beat popularity on buy, with
    the paired interval above 0, in every window and pooled; the intervals hold their point estimates."""
    data = funnel_dataset(n_users=200)
    setup = eval_setup(data)
    out = evaluate_windows(
        {"repeat-recent": RepeatBehavior(), "popularity": BehaviorPopularity()},
        data,
        setup,
        k=3,
        reference="repeat-recent",
        draws=100,
    )
    assert out["k"] == 3 and len(out["windows"]) == 3
    assert sum(w["users"] > 0 for w in out["windows"]) == 3
    for w in out["windows"]:
        assert w["scores"]["repeat-recent"]["buy"]["AUC"] > w["scores"]["popularity"]["buy"]["AUC"]
    pooled = out["pooled"]["repeat-recent"]
    for metric in ("AUC", "GAUC"):
        lo, hi = pooled["buy"][f"{metric}_ci"]
        assert lo <= pooled["buy"][metric] <= hi
    nb = pooled["next_buy"]
    assert nb["HR@10_ci"][0] <= nb["HR@10"] <= nb["HR@10_ci"][1]
    assert nb["users"] == sum(w["next_order_users"] for w in out["windows"])
    d = out["differences"]["popularity"]["buy"]["AUC"]
    assert d["diff"] == pytest.approx(pooled["buy"]["AUC"] - out["pooled"]["popularity"]["buy"]["AUC"])
    assert d["ci"][0] > 0 and d["above_0"]
    assert "windows" in out["protocol"] and len(out["protocol"]["windows"]) == 3


def test_a_scorer_against_itself_differs_by_exactly_zero():
    data = funnel_dataset(n_users=60)
    out = evaluate_windows(
        {"a": RepeatBehavior(), "b": RepeatBehavior()}, data, eval_setup(data), k=2, reference="a", draws=50
    )
    for section in out["differences"]["b"].values():
        for m in section.values():
            assert m["diff"] == 0.0 and m["ci"] == [0.0, 0.0] and not m["above_0"]


def test_too_many_windows_is_a_clear_error():
    data = funnel_dataset(n_users=20)
    n = len(np.unique(np.asarray(data.seqs.timestamps)[np.asarray(data.seqs.split) == TEST]))
    with pytest.raises(InputError, match=f"--windows {n + 1} needs at least {n + 1}"):
        rolling_windows(data.seqs, n + 1)
