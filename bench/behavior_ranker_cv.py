"""How the behaviour ranker's settings were chosen: grouped cross-validation on the validation window.

    python bench/behavior_ranker_cv.py bench/.cache/models/beh_retailrocket

For the primary behaviour (buy, like, …) and three feature sets — all signals (the ranker's default), no
head logits, counts only (``candidates.pair_features`` + recent popularity) — it fits the ranker's logistic
regression at C = 0.01, 0.1, 1 and a gradient-boosting classifier, and prints the AUC of 5-fold
cross-validation over the validation window's users (what a choice may be based on) beside the AUC on the
test window (what the benchmark reports; never used to choose).
"""

from __future__ import annotations

import argparse

import numpy as np
from behavior_noise import load_behavior_model
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import GroupKFold

from nextaction.behavior.candidates import n_pair_features
from nextaction.behavior.ranker import BehaviorRanker, ModelBehaviorScorer
from nextaction.evaluation.metrics import auc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir")
    args = ap.parse_args()
    model, _, data, target, setup = load_behavior_model(args.model_dir)
    k = target - 1
    scorer = ModelBehaviorScorer(model)
    _, xv = scorer.signals(data.seqs, setup.valid)
    _, xt = scorer.signals(data.seqs, setup.test)
    yv, yt = setup.valid.labels, setup.test.labels
    folds = list(GroupKFold(5).split(xv, yv[:, k], setup.valid.user_of_candidate()))
    p = n_pair_features(yv.shape[1])
    feature_sets = {
        "all signals": np.r_[0 : xv.shape[1]],
        "no head logits": np.r_[0 : p + 3],
        "counts only": np.r_[0 : p + 1],
    }

    def ranker(c: float):
        def fit(x, y):
            r = BehaviorRanker.fit(x, y, c=c)
            return lambda z: r(z)[:, k]

        return fit

    def gbm(x, y):
        m = HistGradientBoostingClassifier(max_iter=200, early_stopping=True, random_state=0).fit(x, y[:, k])
        return lambda z: m.predict_proba(z)[:, 1]

    models = {"LR C=0.01": ranker(0.01), "LR C=0.1": ranker(0.1), "LR C=1": ranker(1.0), "GBM": gbm}
    print(
        f"{data.behaviors[target]} AUC; validation: 5-fold grouped by user; test: fitted on all of validation\n"
    )
    print("| features | model | validation CV AUC | test AUC |")
    print("|---|---|---:|---:|")
    for fname, cols in feature_sets.items():
        for mname, make in models.items():
            cv = [auc(make(xv[tr][:, cols], yv[tr])(xv[te][:, cols]), yv[te, k]) for tr, te in folds]
            test = auc(make(xv[:, cols], yv)(xt[:, cols]), yt[:, k])
            print(f"| {fname} | {mname} | {np.mean(cv):.4f} | {test:.4f} |")


if __name__ == "__main__":
    main()
