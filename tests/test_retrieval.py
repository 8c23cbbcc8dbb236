"""Top-k retrieval: the chunked exact index equals a full top-k; the FAISS index finds almost the same;
the Predictor answers the same from the exact index; evaluation does not depend on catalogue chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factories import cyclic_dataset, trained_model_dir
from nextaction import Predictor
from nextaction.data.schema import TEST
from nextaction.model import ModelConfig
from nextaction.retrieval import ExactIndex, recall_at_k
from nextaction.scoring import evaluate_model
from nextaction.training.state import TrainConfig


def full_topk(
    vectors: torch.Tensor, queries: torch.Tensor, k: int, exclude: list[np.ndarray]
) -> torch.Tensor:
    s = queries @ vectors.T
    s[:, 0] = float("-inf")
    for b, items in enumerate(exclude):
        s[b, torch.from_numpy(items)] = float("-inf")
    return torch.topk(s, k, dim=1)


def test_chunked_exact_index_equals_a_full_topk() -> None:
    g = torch.Generator().manual_seed(0)
    vectors, queries = torch.randn(1_001, 16, generator=g), torch.randn(7, 16, generator=g)
    exclude = [np.array([3, 999, 500]), np.array([], np.int64), *[np.arange(b, 40, 7) for b in range(5)]]
    want = full_topk(vectors, queries, 25, exclude)
    got = ExactIndex(vectors, chunk=97).search(queries, 25, exclude=exclude)
    torch.testing.assert_close(got.scores, want.values)
    assert torch.equal(got.items, want.indices)
    assert not (got.items == 0).any()  # padding is never returned


@pytest.mark.parametrize("n_queries", [1, 4])
def test_bf16_first_pass_still_gives_the_exact_answer(n_queries: int) -> None:
    """The bf16 pass only shortlists; rescoring in fp32 must give the fp32 search's items and scores."""
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(50, 32, generator=g)
    # near-ties on purpose: many items close to the same centres, where bf16 rounding reorders scores
    vectors = centres[torch.randint(50, (20_001,), generator=g)] + 0.01 * torch.randn(20_001, 32, generator=g)
    queries = centres[:n_queries] + 0.01 * torch.randn(n_queries, 32, generator=g)
    exclude = [np.arange(b, 300, 3) for b in range(n_queries)]
    want = ExactIndex(vectors, bf16=False).search(queries, 20, exclude=exclude)
    index = ExactIndex(vectors, bf16=True)
    assert index.vectors_bf16 is not None
    got = index.search(queries, 20, exclude=exclude)
    assert torch.equal(got.items, want.items)
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-5, atol=1e-5)


def test_faiss_index_recall_and_exact_scores() -> None:
    from nextaction.retrieval import FaissIndex as faiss_index  # an import bug of ours fails, never skips

    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(1)
    # like learned item vectors: clustered (categories), with varied norms (popularity), so truly MIPS
    centres = torch.randn(40, 32, generator=g)
    vectors = centres[torch.randint(40, (5_001,), generator=g)] + 0.3 * torch.randn(5_001, 32, generator=g)
    vectors = vectors * (0.5 + torch.rand(5_001, 1, generator=g))
    queries = centres[torch.randint(40, (50,), generator=g)] + 0.3 * torch.randn(50, 32, generator=g)
    exact = ExactIndex(vectors).search(queries, 10)
    approx = faiss_index(vectors, ef_search=128).search(queries, 10)
    assert recall_at_k(approx, exact) >= 0.95
    # returned scores are the exact dot products of the returned items
    torch.testing.assert_close(approx.scores, torch.einsum("bd,bkd->bk", queries, vectors[approx.items]))
    barred = [exact.items[b, :3].numpy() for b in range(50)]
    again = faiss_index(vectors, ef_search=128).search(queries, 10, exclude=barred)
    assert all(not set(barred[b].tolist()) & set(again.items[b].tolist()) for b in range(50))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("retrieval-model")
    data = cyclic_dataset(n_users=30, n_items=40, length=9)
    mc = ModelConfig(n_items=data.n_items, n_behaviors=2, dim=16, max_len=10, dropout=0.0)
    tc = TrainConfig(epochs=3, batch_size=16, lr=5e-3, warmup_steps=2, precision="fp32", threads=1)
    return trained_model_dir(out, data, mc, tc)


def test_predictor_exact_index_gives_the_same_recommendations(model_dir) -> None:
    p = Predictor.load(model_dir)
    histories = [["i3", "i4", "i5"], ["i10"], [], ["i1", "i2", "i3", "i4", "i5", "i6"]]
    plain = p.recommend_many(histories, k=8)
    p.use_index("exact", chunk=7)
    indexed = p.recommend_many(histories, k=8)
    for a, b in zip(plain, indexed, strict=True):
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=1e-5, atol=1e-6)
        if len({s for _, s in a}) == len(a):  # no ties (the empty history's popularity ties may order freely)
            assert [i for i, _ in a] == [i for i, _ in b]


def test_evaluation_does_not_depend_on_catalogue_chunking(model_dir, monkeypatch) -> None:
    from nextaction.evaluation import ranking as evaluate

    p = Predictor.load(model_dir)
    ranks_full, _ = evaluate_model(p.model, p.data.seqs, split=TEST, exclude_seen=True)
    monkeypatch.setattr(evaluate, "EVAL_SCORE_BUDGET", 3 * 41)  # 3 users at a time
    assert evaluate.catalogue_chunk(2048, 40) == 3
    ranks_small, _ = evaluate_model(p.model, p.data.seqs, split=TEST, exclude_seen=True)
    assert np.array_equal(ranks_full, ranks_small)


def test_evaluating_a_user_sample_is_a_fixed_subset_of_the_full_evaluation(model_dir) -> None:
    from nextaction.evaluation.ranking import eval_examples

    p = Predictor.load(model_dir)
    ex = eval_examples(p.data.seqs, split=TEST)
    sub = ex.sample(10, seed=0)
    assert len(sub) == 10 and np.array_equal(sub.user_idx, ex.sample(10, seed=0).user_idx)
    assert np.all(np.diff(sub.user_idx) > 0) and set(sub.user_idx) <= set(ex.user_idx)
    assert ex.sample(0) is ex and ex.sample(10_000) is ex
    full, _ = evaluate_model(p.model, p.data.seqs, split=TEST, exclude_seen=True)
    part, _ = evaluate_model(p.model, p.data.seqs, split=TEST, exclude_seen=True, max_users=10)
    rows = np.searchsorted(ex.user_idx, sub.user_idx)
    assert np.array_equal(part, full[rows])


def test_cli_evaluate_users_records_the_sample(model_dir, capsys) -> None:
    import json

    from test_cli import run

    code, out, _ = run(["evaluate", str(model_dir), "--users", "7", "--json"], capsys)
    assert code == 0
    proto = json.loads(out)["protocol"]
    assert proto["users_evaluated"] == 7 and proto["users_sampled_from"] == 30
