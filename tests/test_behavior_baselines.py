"""Behaviour baselines: shapes and alignment, determinism, rankings, and that each learns what it should."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from factories import funnel_dataset
from nextaction.behavior.baselines import (
    BehaviorPopularity,
    BehaviorScorer,
    FeatureModel,
    RepeatBehavior,
    default_behavior_baselines,
)
from nextaction.behavior.candidates import CandidateSet, train_popularity, window_candidates
from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import TEST, TRAIN, VALID
from nextaction.errors import InputError

NB = 3  # view, cart, buy
BUY = 3
NAMES = ["popularity", "repeat-recent", "logreg", "gbm"]


@pytest.fixture(scope="module")
def data() -> PreparedDataset:
    return funnel_dataset()


@pytest.fixture(scope="module")
def windows(data: PreparedDataset) -> dict[int, CandidateSet]:
    pop = train_popularity(data)
    return {s: window_candidates(data.seqs, split=s, n_behaviors=NB, popularity=pop) for s in (VALID, TEST)}


@pytest.fixture(scope="module")
def fitted(data: PreparedDataset, windows: dict[int, CandidateSet]) -> dict[str, BehaviorScorer]:
    return {m.name: m.fit(data, train=windows[VALID]) for m in default_behavior_baselines()}


def _subset(cands: CandidateSet, rows: list[int]) -> CandidateSet:
    """The candidates of users ``rows`` (in that order) as a CandidateSet of their own."""
    spans = [np.arange(cands.offsets[r], cands.offsets[r + 1]) for r in rows]
    r = np.asarray(rows)
    return CandidateSet(
        user_idx=cands.user_idx[r],
        hist_start=cands.hist_start[r],
        hist_end=cands.hist_end[r],
        offsets=np.concatenate([[0], np.cumsum([len(s) for s in spans])]),
        items=cands.items[np.concatenate(spans)],
        labels=cands.labels[np.concatenate(spans)],
    )


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(positive scores above negative), ties counting half."""
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def _train_counts(data: PreparedDataset, behavior: int) -> np.ndarray:
    seqs = data.seqs
    keep = (seqs.split == TRAIN) & (seqs.behaviors == behavior)
    return np.bincount(seqs.items[keep], minlength=data.n_items + 1)


def test_default_baselines_are_fresh_instances_of_all_four() -> None:
    first, second = default_behavior_baselines(), default_behavior_baselines()
    assert [m.name for m in first] == NAMES
    assert all(a is not b for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_methods_before_fit_raise(name: str) -> None:
    scorer = next(m for m in default_behavior_baselines() if m.name == name)
    cands = window_candidates(
        funnel_dataset(n_users=10).seqs, split=TEST, n_behaviors=NB, popularity=np.ones(61)
    )
    with pytest.raises(RuntimeError, match="before fit"):
        scorer.behavior_scores(funnel_dataset(n_users=10).seqs, cands)
    with pytest.raises(RuntimeError, match="before fit"):
        scorer.rank_scores(funnel_dataset(n_users=10).seqs, cands.hist_start, cands.hist_end, behavior=BUY)


@pytest.mark.parametrize("split", [VALID, TEST])
@pytest.mark.parametrize("name", NAMES)
def test_behavior_scores_shape_and_alignment(
    name: str, split: int, data: PreparedDataset, windows: dict[int, CandidateSet], fitted: dict
) -> None:
    cands = windows[split]
    scores = fitted[name].behavior_scores(data.seqs, cands)
    assert scores.shape == (len(cands.items), NB)
    assert scores.dtype == np.float64
    assert np.isfinite(scores).all()
    # a reordered subset of users gets exactly the rows of the full set: scores follow cands.items
    rows = [7, 3, len(cands) - 1]
    part = fitted[name].behavior_scores(data.seqs, _subset(cands, rows))
    expected = np.concatenate([scores[cands.offsets[r] : cands.offsets[r + 1]] for r in rows])
    # (equal up to BLAS rounding: a matrix product may round differently for a different number of rows)
    np.testing.assert_allclose(part, expected, rtol=1e-6, atol=1e-6)
    # and the scores carry signal: buy candidates outscore the rest at least a little for everyone
    assert _auc(scores[cands.labels[:, 2], 2], scores[~cands.labels[:, 2], 2]) > 0.52


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_across_calls_and_refits(
    name: str, data: PreparedDataset, windows: dict[int, CandidateSet], fitted: dict
) -> None:
    first = fitted[name].behavior_scores(data.seqs, windows[TEST])
    np.testing.assert_array_equal(first, fitted[name].behavior_scores(data.seqs, windows[TEST]))
    refit = next(m for m in default_behavior_baselines() if m.name == name).fit(data, train=windows[VALID])
    np.testing.assert_array_equal(first, refit.behavior_scores(data.seqs, windows[TEST]))


@pytest.mark.parametrize("behavior", [1, 2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_rank_scores_cover_the_catalogue(
    name: str, behavior: int, data: PreparedDataset, windows: dict[int, CandidateSet], fitted: dict
) -> None:
    cands = windows[TEST]
    scores = fitted[name].rank_scores(
        data.seqs, cands.hist_start[:20], cands.hist_end[:20], behavior=behavior
    )
    assert scores.shape == (20, data.n_items + 1)
    assert scores.dtype == np.float64
    assert np.isneginf(scores[:, 0]).all()
    assert np.isfinite(scores[:, 1:]).all()
    assert all(len(np.unique(row[1:])) > data.n_items // 2 for row in scores)  # ties broken, never constant
    repeat = fitted[name].rank_scores(
        data.seqs, cands.hist_start[:20], cands.hist_end[:20], behavior=behavior
    )
    np.testing.assert_array_equal(scores, repeat)


def test_rank_scores_reject_an_unknown_behaviour(data: PreparedDataset, fitted: dict) -> None:
    with pytest.raises(InputError, match="behaviour index"):
        fitted["popularity"].rank_scores(data.seqs, np.array([0]), np.array([1]), behavior=NB + 1)


def test_popularity_ranks_the_most_bought_item_first(
    data: PreparedDataset, windows: dict[int, CandidateSet], fitted: dict
) -> None:
    buys = _train_counts(data, BUY)
    ranked = fitted["popularity"].rank_scores(data.seqs, np.array([0, 5]), np.array([3, 9]), behavior=BUY)
    assert buys[ranked.argmax(axis=1)].tolist() == [buys.max()] * 2
    np.testing.assert_array_equal(ranked[0], ranked[1])  # the same row for everyone
    # candidate scores follow buy counts: sorted by score, counts never go down
    cands = windows[TEST]
    order = np.argsort(fitted["popularity"].behavior_scores(data.seqs, cands)[:, 2], kind="stable")
    assert (np.diff(buys[cands.items[order]]) >= 0).all()


def test_repeat_behavior_prefers_the_users_own_items(
    data: PreparedDataset, windows: dict[int, CandidateSet], fitted: dict
) -> None:
    cands = windows[TEST]
    seqs = data.seqs
    r = 0
    own = seqs.items[cands.hist_start[r] : cands.hist_end[r]]
    popular_first = np.argsort(-train_popularity(data), kind="stable")
    stranger = next(int(i) for i in popular_first if i not in own)  # the most popular item they never touched
    pair = dataclasses.replace(
        _subset(cands, [r]),
        offsets=np.array([0, 2]),
        items=np.array([own[-1], stranger]),
        labels=np.zeros((2, NB), bool),
    )
    scores = fitted["repeat-recent"].behavior_scores(seqs, pair)
    assert (scores[0] > scores[1]).all()
    ranked = fitted["repeat-recent"].rank_scores(
        seqs, cands.hist_start[[r]], cands.hist_end[[r]], behavior=BUY
    )
    assert ranked[0, own[-1]] > ranked[0, stranger]
    assert isinstance(fitted["repeat-recent"], RepeatBehavior)


@pytest.mark.parametrize("name", ["gbm", "logreg"])
def test_feature_model_learns_that_carted_items_get_bought(
    name: str, data: PreparedDataset, windows: dict[int, CandidateSet], fitted: dict
) -> None:
    """Carted-but-not-yet-bought history items are bought within 1-3 events; popular negatives are not."""
    cands, seqs = windows[TEST], data.seqs
    buy = fitted[name].behavior_scores(seqs, cands)[:, 2]
    pending, negative = [], []
    for r in range(len(cands)):
        items = seqs.items[cands.hist_start[r] : cands.hist_end[r]]
        behaviors = seqs.behaviors[cands.hist_start[r] : cands.hist_end[r]]
        for j in range(cands.offsets[r], cands.offsets[r + 1]):
            seen = np.flatnonzero(items == cands.items[j])
            if len(seen) and behaviors[seen[-1]] == 2:
                pending.append(j)
            elif not len(seen) and not cands.labels[j].any():
                negative.append(j)
    assert len(pending) >= 20 and len(negative) >= 1000
    assert cands.labels[pending, 2].mean() > 0.9  # the premise: they really are bought
    assert _auc(buy[pending], buy[negative]) > 0.95
    popularity = fitted["popularity"].behavior_scores(seqs, cands)[:, 2]
    assert _auc(buy[pending], buy[negative]) > _auc(popularity[pending], popularity[negative]) + 0.2


def test_feature_model_falls_back_to_popularity_for_a_single_class_behaviour(
    data: PreparedDataset, windows: dict[int, CandidateSet]
) -> None:
    labels = windows[VALID].labels.copy()
    labels[:, 2] = False  # nobody buys in the training window
    model = FeatureModel(kind="logreg").fit(data, train=dataclasses.replace(windows[VALID], labels=labels))
    cands = windows[TEST]
    scores = model.behavior_scores(data.seqs, cands)
    expected = BehaviorPopularity().fit(data, train=windows[VALID]).behavior_scores(data.seqs, cands)[:, 2]
    np.testing.assert_array_equal(scores[:, 2], expected)
    assert not np.array_equal(scores[:, 1], expected)  # the other behaviours are still learned


def test_feature_model_rejects_an_unknown_kind() -> None:
    with pytest.raises(InputError, match="kind"):
        FeatureModel(kind="forest")  # type: ignore[arg-type]
