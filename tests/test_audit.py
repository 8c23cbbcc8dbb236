"""Membership inference on users (privacy/audit.py): the attack metrics, the member/non-member sets, and
that the audit catches a model that memorised its users."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from factories import events_dataset, small_cfgs
from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import TEST, TRAIN, VALID
from nextaction.privacy.audit import attack_metrics, audit_users, membership_audit, tpr_at_fpr
from nextaction.training.checkpoint import save_model
from nextaction.training.loop import fit, held_out_users
from test_cli import run


def test_tpr_at_fpr_counts_members_above_the_threshold_that_flags_1pct_of_non_members() -> None:
    non = np.arange(200, dtype=float)  # 1% of 200 = 2 may score above the threshold: 199 and 198
    members = np.array([197.5, 198.5, 250.0, 10.0])
    scores = np.concatenate([members, non])
    labels = np.concatenate([np.ones(4, bool), np.zeros(200, bool)])
    assert tpr_at_fpr(scores, labels) == pytest.approx(3 / 4)  # 197.5, 198.5 and 250 exceed 197
    m = attack_metrics(scores, labels)
    assert m["members"] == 4 and m["non_members"] == 200
    lo, hi = m["auc_ci95"]
    assert lo <= m["auc"] <= hi


def test_attack_metrics_of_no_signal_and_full_signal() -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(2000) < 1000
    noise = attack_metrics(rng.normal(size=2000), labels)
    assert abs(noise["auc"] - 0.5) < 0.04 and noise["auc_ci95"][0] < 0.5 < noise["auc_ci95"][1]
    perfect = attack_metrics(labels.astype(float), labels)
    assert perfect["auc"] == 1.0 and perfect["tpr_at_1pct_fpr"] == 1.0


def random_histories(
    n_users: int = 120, n_items: int = 60, length: int = 12, seed: int = 0
) -> PreparedDataset:
    """Each user a random walk through the catalogue: nothing to generalise, everything to memorise."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        for t, i in enumerate(rng.integers(1, n_items + 1, length)):
            split = TEST if t == length - 1 else VALID if t == length - 2 else TRAIN
            rows.append((u, int(i), 1, t * 60_000, split))
    return events_dataset(rows, n_users=n_users, n_items=n_items, behaviors=["<pad>", "interact"],
                          split_kind="leave_one_out")  # fmt: skip


@pytest.fixture(scope="module")
def memorised(tmp_path_factory: pytest.TempPathFactory):
    data = random_histories()
    mc, tc = small_cfgs(data, epochs=12, holdout_users=30, batch_size=16, lr=2e-2)
    mc = replace(mc, max_len=16)
    model, _ = fit(data, mc, tc, out_dir=tmp_path_factory.mktemp("target"))
    ref_cfg = replace(tc, holdout_users=60)
    reference, _ = fit(data, mc, ref_cfg, out_dir=tmp_path_factory.mktemp("reference"))
    return data, model, tc, reference, ref_cfg


def test_members_and_non_members(memorised) -> None:
    data, _, tc, _, ref_cfg = memorised
    members, non = audit_users(data, tc)
    assert np.array_equal(non, held_out_users(data, tc)) and len(members) == len(non) == 30
    assert not np.isin(members, non).any()
    # with a reference: the users the target trained on and the reference held out
    members, non = audit_users(data, tc, reference_cfg=ref_cfg)
    ref_held = held_out_users(data, ref_cfg)
    assert len(members) == 30 and np.isin(members, ref_held).all() and not np.isin(members, non).any()
    with pytest.raises(Exception, match="hold out more users"):
        audit_users(data, ref_cfg, reference_cfg=tc)


def test_the_audit_catches_a_model_that_memorised_its_users(memorised) -> None:
    data, model, tc, reference, ref_cfg = memorised
    result = membership_audit(model, data, tc, reference=(reference, ref_cfg))
    loss, calibrated = result["attacks"]["loss"], result["attacks"]["calibrated"]
    assert result["mean_loss"]["members"] < result["mean_loss"]["non_members"]
    assert loss["auc"] > 0.7 and loss["auc_ci95"][0] > 0.5
    assert calibrated["auc"] > 0.6  # 30 against 30 users: a wide interval; the reference adds its own noise


def test_audit_cli_needs_held_out_users(tmp_path: Path, capsys, memorised) -> None:
    data, model, tc, _, _ = memorised
    d = tmp_path / "m"
    save_model(d, model, replace(tc, holdout_users=0), {"exclude_seen": True})
    data.save(d / "data")
    code, _, err = run(["audit", str(d)], capsys)
    assert code == 2 and "train.holdout_users" in err
    save_model(d, model, tc, {"exclude_seen": True})
    code, out, err = run(["audit", str(d), "--json"], capsys)
    assert code == 0, err
    assert '"loss"' in out
