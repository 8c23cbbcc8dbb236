import numpy as np
import pytest
import torch

from nextaction.evaluation.metrics import (
    MISS_RANK,
    auc,
    auc_bootstrap_sd,
    coverage,
    pessimistic_ranks,
    ranking_metrics,
)


def test_ranking_metrics_by_hand():
    # ranks 0, 1, 4, 30 (0-based)
    m = ranking_metrics(np.array([0, 1, 4, 30]), ks=(5, 10))
    assert m["HR@5"] == pytest.approx(3 / 4)
    assert m["HR@10"] == pytest.approx(3 / 4)
    ndcg = (1 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(6)) / 4
    assert m["NDCG@5"] == pytest.approx(ndcg)
    assert m["MRR@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 4)
    assert m["Recall@10"] == m["HR@10"]


def test_rank_boundary_at_k():
    # rank 9 is the 10th place: inside @10, outside @5
    m = ranking_metrics(np.array([9]), ks=(5, 10))
    assert m["HR@10"] == 1.0 and m["HR@5"] == 0.0
    assert m["NDCG@10"] == pytest.approx(1 / np.log2(11))


def test_ties_are_pessimistic():
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.5]])
    # target (column 1) ties with two others: it ranks behind both
    assert pessimistic_ranks(scores, torch.tensor([1])).item() == 2
    assert pessimistic_ranks(scores, torch.tensor([4])).item() == 3


def test_all_equal_scores_rank_last():
    scores = torch.zeros(1, 101)
    assert pessimistic_ranks(scores, torch.tensor([7])).item() == 100


def test_coverage():
    tops = np.array([[1, 2, 3], [3, 4, 0]])
    assert coverage(tops, n_items=8) == pytest.approx(4 / 8)


def test_empty_ranks():
    assert ranking_metrics(np.array([]))["NDCG@10"] == 0.0


# ---- probability metrics ----------------------------------------------------------------------------


def test_auc_against_hand_computed_pairs():
    from nextaction.evaluation.metrics import auc

    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    # positive pairs: (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3 of 4
    assert auc(scores, labels) == 0.75
    assert auc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5  # a tie counts half
    assert np.isnan(auc(np.array([0.2, 0.3]), np.array([1, 1])))


def test_auc_bootstrap_sd_equals_resampling_users_by_hand():
    from nextaction.evaluation.metrics import auc, auc_bootstrap_sd

    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(30), rng.integers(3, 12, 30))
    labels = rng.random(len(groups)) < 0.3
    scores = np.round(rng.normal(size=len(groups)) + labels, 1)  # rounded: many ties
    draws = np.random.default_rng(0)  # the function's own draws, replayed: one resample per draw
    by_hand = []
    for _ in range(50):
        users = draws.integers(0, 30, 30)
        idx = np.concatenate([np.flatnonzero(groups == u) for u in users])
        by_hand.append(auc(scores[idx], labels[idx]))
    assert auc_bootstrap_sd(scores, labels, groups, draws=50, seed=0) == pytest.approx(
        np.std(by_hand), abs=1e-12
    )
    assert np.isnan(auc_bootstrap_sd(scores, np.ones_like(labels), groups))


def test_gauc_weights_users_by_candidates_and_skips_one_class_users():
    from nextaction.evaluation.metrics import gauc

    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.7, 0.5, 0.4])
    labels = np.array([1, 0, 1, 0, 0, 1, 1])
    groups = np.array([0, 0, 1, 1, 1, 2, 2])  # user 2 has positives only
    # user 0: AUC 1 (2 candidates); user 1: AUC 0 (3 candidates)
    assert gauc(scores, labels, groups) == (1.0 * 2 + 0.0 * 3) / 5


def test_log_loss_ece_and_f1_threshold():
    from nextaction.evaluation.metrics import (
        best_f1_threshold,
        binary_metrics,
        expected_calibration_error,
        log_loss,
    )

    assert log_loss(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(np.log(2))
    # two bins: [0.9] says 0.9 and is right (|0.9-1|), [0.1] says 0.1 and is right (|0.1-0|)
    assert expected_calibration_error(np.array([0.9, 0.1]), np.array([1, 0])) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([0.3] * 10), np.array([1] * 3 + [0] * 7)) == pytest.approx(0.0)
    probs = np.array([0.9, 0.8, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1])
    t = best_f1_threshold(probs, labels)
    assert t == 0.2  # all positive: P 3/4, R 1 -> F1 6/7 beats the cut at 0.8 (F1 4/5)
    m = binary_metrics(probs, labels, t)
    assert m["recall"] == 1.0 and m["precision"] == 0.75 and m["F1"] == pytest.approx(6 / 7)


def test_nan_scores_count_against_the_scorer():
    scores = torch.tensor(
        [
            [float("-inf"), 0.5, float("nan"), 0.1, 0.9],  # a NaN rival ranks above the target (item 1)
            [float("-inf"), float("nan"), 0.2, 0.3, 0.4],  # a NaN target is a miss: below every candidate
            [float("-inf"), 0.5, 0.1, 0.2, 0.3],  # no NaN: the plain pessimistic rank
        ]
    )
    ranks = pessimistic_ranks(scores, torch.tensor([1, 1, 1]))
    assert ranks.tolist() == [2, MISS_RANK, 0]
    assert ranking_metrics(ranks.numpy(), ks=(10,))["HR@10"] == pytest.approx(2 / 3)
    assert np.isfinite(ranking_metrics(ranks.numpy(), ks=(10,))["NDCG@10"])


# ---- next order (several relevant items) and the paired bootstrap -----------------------------------------


def test_multi_target_metrics_by_hand():
    from nextaction.evaluation.metrics import multi_target_metrics

    # user 0: order of 2 items at ranks 0 and 3; user 1: one item at rank 12; user 2: ranks 1 and 9 and 30
    m = multi_target_metrics(np.array([0, 2, 3, 6]), np.array([0, 3, 12, 1, 9, 30]), ks=(10,))
    idcg2 = 1 + 1 / np.log2(3)
    idcg3 = idcg2 + 1 / np.log2(4)
    assert m["HR@10"].tolist() == [1.0, 0.0, 1.0]
    assert m["NDCG@10"] == pytest.approx(
        [(1 + 1 / np.log2(5)) / idcg2, 0.0, (1 / np.log2(3) + 1 / np.log2(11)) / idcg3]
    )
    assert m["MRR@10"] == pytest.approx([1.0, 0.0, 0.5])
    # one relevant item each: the single-target formulas
    one = multi_target_metrics(np.arange(4), np.array([0, 4, 15]), ks=(10,))
    single = ranking_metrics(np.array([0, 4, 15]), ks=(10,))
    assert one["NDCG@10"].mean() == pytest.approx(single["NDCG@10"])
    assert one["HR@10"].mean() == pytest.approx(single["HR@10"])


def test_bootstrap_auc_with_unit_weights_is_the_auc_and_pairs_draws():
    from nextaction.evaluation.metrics import bootstrap_auc, bootstrap_weights, interval

    rng = np.random.default_rng(0)
    units = np.repeat(np.arange(50), 8)
    y = rng.random(len(units)) < 0.3
    s = y + rng.normal(size=len(units))
    ones = np.ones((1, 50))
    assert bootstrap_auc(s, y, units, ones)[0] == pytest.approx(auc(s, y))
    w = bootstrap_weights(units, draws=200, seed=0)
    assert w.shape == (200, 50) and (w.sum(axis=1) == 50).all()
    a, b = bootstrap_auc(s, y, units, w), bootstrap_auc(s + 0.5 * y, y, units, w)
    lo, _hi = interval(b - a)
    assert lo > 0  # the same draws for both: a strictly better scorer wins in every draw
    assert np.std(a) == pytest.approx(auc_bootstrap_sd(s, y, units, draws=200), rel=0.3)
