"""Membership inference on users: can an attacker who holds a person's events tell whether that person was
in the training log?

The attacker scores each candidate user from the released model alone and guesses "member" above a
threshold. Two attacks:

- ``loss``: the model's mean next-item loss on the user's events (Yeom et al., 2018): a model fits the
  people it was trained on better. Score = −loss.
- ``calibrated``: the same loss minus the loss of a *reference* model that saw neither the candidate nor
  the non-members (Watson et al., 2022; the offline, one-reference form of LiRA, Carlini et al., 2022).
  Users who are simply predictable (long loyal histories, popular items) score low loss under both models,
  so the difference isolates what training on *this* user added. Score = loss_ref − loss_target.

Members and non-members come from the same distribution by construction: the non-members are the model's
held-out users (``train.holdout_users``, a random sample never trained on), the members an equally sized
random sample of the users it trained on. With a reference model trained with more users held out (the
held-out sets are nested prefixes of one permutation), the members are the users the target trained on and
the reference did not, so both models are compared on users the reference never saw.

Reported per attack: AUC (0.5 = the attacker learns nothing) with a bootstrap 95% interval over users, and
the true-positive rate at 1% false positives (what matters when a few confident guesses expose people).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextaction.batches import gather_padded, select_users, training_sequences, training_windows
from nextaction.config import build
from nextaction.data.dataset import PreparedDataset
from nextaction.errors import InputError
from nextaction.evaluation.metrics import auc
from nextaction.evaluation.ranking import fingerprint
from nextaction.model import NextActionModel
from nextaction.privacy.dp import window_nll
from nextaction.training.checkpoint import load_model
from nextaction.training.loop import held_out_users, learned_sequences, validation_users
from nextaction.training.state import TrainConfig

FPR_LEVEL = 0.01


@torch.no_grad()
def user_losses(
    model: NextActionModel, data: PreparedDataset, users: np.ndarray, *, rows: int = 64
) -> np.ndarray:
    """(len(users),) mean next-item cross-entropy of each user's TRAIN events, each predicted from the events
    before it (windows of the model's max_len, as in training); NaN for a user with fewer than 2 events."""
    model.eval()
    seqs = training_sequences(select_users(data.seqs, users))
    starts, lengths = training_windows(seqs, model.cfg.max_len)
    owner = np.searchsorted(np.asarray(seqs.offsets), starts, side="right") - 1
    total = np.zeros(len(users))
    count = np.zeros(len(users))
    for k in range(0, len(starts), rows):
        b = gather_padded(seqs, starts[k : k + rows], lengths[k : k + rows], pad_to=model.cfg.max_len + 1)
        nll, keep, _, _ = window_nll(model, b.items, b.behaviors, b.timestamps)  # (W, L)
        nll = torch.where(keep, nll, 0.0)
        np.add.at(total, owner[k : k + rows], nll.sum(1).double().numpy())
        np.add.at(count, owner[k : k + rows], keep.sum(1).double().numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = FPR_LEVEL) -> float:
    """The share of members caught by the threshold that flags at most ``fpr`` of the non-members."""
    neg = np.sort(scores[~labels])[::-1]
    k = int(np.floor(fpr * len(neg)))  # this many non-members may score above the threshold
    threshold = neg[k] if k < len(neg) else -np.inf
    return float((scores[labels] > threshold).mean()) if labels.any() else float("nan")


def attack_metrics(
    scores: np.ndarray, labels: np.ndarray, *, draws: int = 200, seed: int = 0
) -> dict[str, Any]:
    """AUC (with a bootstrap 95% interval over users) and TPR at 1% FPR of membership scores."""
    ok = ~np.isnan(scores)
    scores, labels = scores[ok], labels[ok]
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(draws):
        i = rng.integers(0, len(scores), len(scores))
        if labels[i].any() and (~labels[i]).any():
            boot.append(auc(scores[i], labels[i]))
    return {
        "auc": float(auc(scores, labels)),
        "auc_ci95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
        "tpr_at_1pct_fpr": tpr_at_fpr(scores, labels),
        "members": int(labels.sum()),
        "non_members": int((~labels).sum()),
    }


def audit_users(
    data: PreparedDataset,
    cfg: TrainConfig,
    *,
    reference_cfg: TrainConfig | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(members, non_members): sorted user positions. Non-members: the held-out users. Members: with a
    reference, the users the target trained on and the reference held out; else an equally sized random
    sample of the users the target trained on."""
    held = held_out_users(data, cfg)
    if held is None:
        raise InputError(
            "audit: the model has no held-out users (non-members); train it with train.holdout_users=N "
            "(private models hold out 1000 by default)"
        )
    _, learned_valid = validation_users(data, cfg)
    trained = np.flatnonzero(np.diff(np.asarray(learned_sequences(data, cfg, learned_valid).offsets)) >= 2)
    if reference_cfg is not None:
        ref_held = held_out_users(data, reference_cfg)
        if ref_held is None or not np.isin(held, ref_held).all() or len(ref_held) <= len(held):
            raise InputError(
                "audit --reference: the reference must hold out more users than the model "
                f"(train.holdout_users > {len(held)}), on the same prepared data"
            )
        members = np.intersect1d(trained, ref_held)
    else:
        rng = np.random.default_rng(seed)
        members = np.sort(rng.choice(trained, size=min(len(held), len(trained)), replace=False))
    return members, held


def membership_audit(
    model: NextActionModel,
    data: PreparedDataset,
    cfg: TrainConfig,
    *,
    reference: tuple[NextActionModel, TrainConfig] | None = None,
) -> dict[str, Any]:
    """Both attacks (``calibrated`` only with a reference model) on the model's members and non-members."""
    members, non_members = audit_users(data, cfg, reference_cfg=None if reference is None else reference[1])
    users = np.concatenate([members, non_members])
    labels = np.concatenate([np.ones(len(members), bool), np.zeros(len(non_members), bool)])
    order = np.argsort(users)
    loss = np.empty(len(users))
    loss[order] = user_losses(model, data, users[order])
    result: dict[str, Any] = {
        "protocol": (
            f"{len(members)} members (users trained on{', held out by the reference' if reference else ''}) "
            f"against {len(non_members)} non-members (held-out users, never trained on); each user's score "
            "from their TRAIN events' mean next-item loss; AUC 0.5 = no membership leak; 95% intervals from "
            "200 bootstrap draws over users (seed 0)"
        ),
        "attacks": {"loss": attack_metrics(-loss, labels)},
        "mean_loss": {
            "members": float(np.nanmean(loss[labels])),
            "non_members": float(np.nanmean(loss[~labels])),
        },
    }
    if reference is not None:
        ref_loss = np.empty(len(users))
        ref_loss[order] = user_losses(reference[0], data, users[order])
        result["attacks"]["calibrated"] = attack_metrics(ref_loss - loss, labels)
    return result


def _load(model_dir: Path) -> tuple[NextActionModel, PreparedDataset, TrainConfig, dict[str, Any]]:
    model, config = load_model(model_dir)
    data = PreparedDataset.load(model_dir / "data")
    cfg = build(TrainConfig, config.get("train", {}), where=f"{model_dir / 'config.json'} [train]")
    return model, data, cfg, config


def audit_dir(model_dir: str | Path, *, reference: str | Path | None = None) -> dict[str, Any]:
    """:func:`membership_audit` of a model directory (on its prepared data), optionally with a reference
    model trained on the same prepared data with more users held out."""
    model, data, cfg, config = _load(Path(model_dir))
    ref = None
    if reference is not None:
        r_model, r_data, r_cfg, _ = _load(Path(reference))
        if fingerprint(r_data) != fingerprint(data):
            raise InputError(
                "audit --reference: the reference was trained on other prepared data", path=reference
            )
        ref = (r_model, r_cfg)
    result = membership_audit(model, data, cfg, reference=ref)
    if privacy := config.get("privacy"):
        result["privacy"] = {k: privacy[k] for k in ("epsilon", "delta", "noise_multiplier", "steps")}
    return result
