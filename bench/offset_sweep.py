"""Test accuracy of a saved text model at several new-item score offsets (the offset is the only change).

    python bench/offset_sweep.py MODEL_DIR 0 1 1.5 2

Shows what the fitted offset (``config.json["new_item_offset"]``, chosen on validation) trades: cold-item
against warm-item accuracy on the test split, full ranking, seen items excluded. Prints a Markdown table.
"""

from __future__ import annotations

import argparse

from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import TEST
from nextaction.evaluation.metrics import ranking_metrics
from nextaction.scoring import evaluate_model
from nextaction.text.items import cold_warm
from nextaction.training.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("offsets", nargs="+", type=float)
    args = ap.parse_args()
    model, _ = load_model(args.model_dir)
    model.eval()
    data = PreparedDataset.load(f"{args.model_dir}/data")
    fitted = float(model.new_item_offset)
    print("| offset | overall NDCG@10 | overall HR@10 | cold HR@10 | cold NDCG@10 | warm NDCG@10 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for offset in args.offsets:
        model.new_item_offset.fill_(offset)
        ranks, _ = evaluate_model(model, data.seqs, split=TEST, exclude_seen=True)
        m = ranking_metrics(ranks, ks=(10,))
        split = cold_warm(data, TEST, ranks)
        if split is None:
            raise SystemExit("this model has no cold-start holdout (train it with --holdout-items)")
        name = f"**{offset:g} (fitted)**" if offset == fitted else f"{offset:g}"
        print(
            f"| {name} | {m['NDCG@10']:.4f} | {m['HR@10']:.4f} | {split['cold']['HR@10']:.4f} | "
            f"{split['cold']['NDCG@10']:.4f} | {split['warm']['NDCG@10']:.4f} |"
        )


if __name__ == "__main__":
    main()
