import numpy as np
import pytest
import torch

from nextaction.metrics import coverage, pessimistic_ranks, ranking_metrics


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
