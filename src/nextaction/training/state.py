"""Training's typed configuration (``TrainConfig``, its epoch defaults) and its resumable counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from nextaction.model import ModelConfig

# id+text models start from their items' text and learn about twice as fast as ID-only ones, so their
# default schedule is shorter: with 50 epochs Beauty's validation plateaued by epoch ~25 and early stopping
# ended runs mid-schedule, at a high learning rate (test NDCG@10 0.0607-0.0633 over three runs); a 30-epoch
# cosine anneals while they still improve (0.0637 and 0.0639, two seeds) in 40% fewer epochs.
TEXT_MODEL_EPOCHS = 30
# A warm start (train --init-from) continues a trained model on a grown log: a short schedule
WARM_START_EPOCHS = 10


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 50  # the cosine schedule spans these; early stopping may end sooner (id+text models: 30)
    batch_size: int = 128  # sequences (windows) per step
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of lr
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping
    valid_users: int = 0  # validate on a fixed random sample of this many users (0 = all): for huge logs
    # Leave-one-out splits: validate on this many users (a fixed sample) and learn from the validation
    # events of all the others — the most recent transitions, 11% more targets on Beauty. The test events
    # stay unseen. 0 = validate on every user and learn from no validation event.
    valid_holdout: int = 5000
    # Users (a fixed sample with validation targets, seed 0) whose events are never trained on: validation
    # and checkpoint selection read them only; the others' validation events are learned on leave-one-out
    # splits unless valid_holdout=0. Private training holds users out so (privacy/dp.py); they
    # are the non-members of the membership audit (privacy/audit.py). 0 = none.
    holdout_users: int = 0
    # Models with item text: new (text-only) items get the largest score offset that costs at most this
    # share of validation NDCG@10 (fit_new_item_offset) — their exposure against accuracy. -1 = no offset.
    new_item_tolerance: float = 0.02
    # sampled loss only: the item table gets sparse gradients and a lazy Adam (SparseAdam), so a step costs
    # O(batch), not O(catalogue). None = on for sampled loss on a plain ID model in one process
    sparse_items: bool | None = None
    loss: Literal["full", "sampled", "bce", "gbce"] = "full"
    label_smoothing: float = 0.0  # full softmax only
    ce_chunk: int = 128  # full softmax: rows per chunk of the fused loss (0 = plain, unfused)
    n_negatives: int = 256  # sampled / bce / gbce
    gbce_t: float = 0.75
    seed: int = 42
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    max_minutes: float = 0.0  # wall-clock budget for training; 0 = none
    eval_every: int = 1
    threads: int = 0  # torch intra-op threads; 0 = all cores
    exclude_seen: bool | None = None  # None: on for single-behaviour logs, off otherwise
    # behaviour head (models with model.behavior_head): loss = next-item CE + behavior_weight * BCE of the
    # behaviours on candidates over the next behavior_horizon events. None = 1.0, except with the outcome
    # objective on (logs without a clock), where it is 0: on ASSISTments 2009 fold 1 the candidate objective
    # cost 30% of each epoch (30 s against 21 s) for a test AUC of 0.8195 against 0.8185 without it.
    behavior_weight: float | None = None
    behavior_horizon: int = 16  # a candidate's labels: what the user did on it in the next N events
    behavior_negatives: int = 4  # popularity-sampled negatives per position
    # + outcome_weight * CE of the next event's behaviour given its item (behavior/outcome.py: "correct or
    # incorrect on this exercise?"). None = on (1.0) for logs without a clock, whose behaviours are the
    # outcomes of attempts, off elsewhere (not measured there yet).
    outcome_weight: float | None = None


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0
    best_ndcg: float = -1.0  # best validation score: NDCG@10 (+ mean behaviour AUC with a behaviour head)
    best_epoch: int = 0
    bad_epochs: int = 0
    seconds: float = 0.0
    learned_valid_events: int = 0  # validation events trained on (see TrainConfig.valid_holdout)


def config_dict(model_cfg: ModelConfig, cfg: TrainConfig) -> dict[str, Any]:
    return {"model": asdict(model_cfg), "train": asdict(cfg)}
