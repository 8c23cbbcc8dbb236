"""Inference helpers: evaluation scores do not depend on how users are batched; the valid split's target."""

import numpy as np

from factories import cyclic_dataset, small_cfgs
from nextaction.data.schema import TEST, VALID
from nextaction.scoring import evaluate_model
from nextaction.training.loop import fit


def test_evaluation_is_invariant_to_batch_size(tmp_path):
    data = cyclic_dataset(n_users=50, n_items=30, length=12, seed=3)
    mc, tc = small_cfgs(data, epochs=3)
    model, _ = fit(data, mc, tc, out_dir=tmp_path)
    results = [
        evaluate_model(model, data.seqs, split=TEST, exclude_seen=True, chunk=c)[0] for c in (1, 7, 64, 4096)
    ]
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


def test_valid_split_evaluates_second_last():
    data = cyclic_dataset(n_users=10, n_items=20, length=6)
    from nextaction.evaluation.ranking import eval_examples

    ex = eval_examples(data.seqs, split=VALID)
    assert len(ex) == 10 and ((ex.hist_end - ex.hist_start) == 4).all()
