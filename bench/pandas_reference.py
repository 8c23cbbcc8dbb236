"""A straightforward pandas version of ``nextaction prepare``, as a yardstick for bench_data.py.

Same steps, written the way most people would: read the file, parse timestamps, drop rows with a missing
field, drop exact duplicates, index ids, sort, leave-one-out split, write parquet. No reject bookkeeping,
no report — so it does less than ``nextaction prepare`` and is a fair lower bound on plain-pandas cost.

    python bench/pandas_reference.py EVENTS --format {csv,movielens,sequences} --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["user_id", "item_id", "timestamp", "behavior"]


def read(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        frame = pd.read_csv(path, dtype={"user_id": str, "item_id": str})
        if "behavior" not in frame:
            frame["behavior"] = "interact"
    elif fmt == "movielens":
        path = path / "u.data" if path.is_dir() else path
        frame = pd.read_csv(
            path,
            sep="\t",
            names=["user_id", "item_id", "value", "timestamp"],
            dtype={"user_id": str, "item_id": str},
        )
        frame["behavior"] = "rating"
    elif fmt == "sequences":
        lines = pd.read_csv(path, header=None, names=["line"])["line"].str.split(" ")
        frame = pd.DataFrame({"user_id": lines.str[0], "item_id": lines.str[1:]}).explode("item_id")
        # Positions become seconds, as in nextaction: position p -> p * 1000 ms.
        frame["timestamp"] = frame.groupby("user_id").cumcount().astype(np.int64)
        frame["behavior"] = "interact"
    else:
        raise SystemExit(f"unknown format {fmt!r}")
    return frame


def to_millis(column: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column):
        median = column.median()
        scale = 1000 if median < 1e11 else 1 if median < 1e14 else 1e-3 if median < 1e17 else 1e-6
        return (column * scale).round().astype("Int64")
    parsed = pd.to_datetime(column, utc=True, errors="coerce")
    return (parsed.astype("int64") // 1_000_000).astype("Int64").where(parsed.notna())


def prepare(path: Path, fmt: str, out: Path) -> None:
    frame = read(path, fmt)
    frame["timestamp"] = to_millis(frame["timestamp"])
    frame = frame.dropna(subset=COLUMNS)
    frame = frame.drop_duplicates(subset=COLUMNS)
    frame["user_idx"], users = pd.factorize(frame["user_id"])
    frame["item_idx"], items = pd.factorize(frame["item_id"])
    frame["behavior_idx"], behaviors = pd.factorize(frame["behavior"])
    frame[["user_idx", "item_idx", "behavior_idx"]] += 1
    frame = frame.sort_values(["user_idx", "timestamp"], kind="stable")
    # Leave-one-out: last event -> test (users with >= 2), the one before -> valid (users with >= 3).
    grouped = frame.groupby("user_idx")
    from_end = grouped.cumcount(ascending=False)
    size = grouped["item_idx"].transform("size")
    frame["split"] = np.select([(from_end == 0) & (size >= 2), (from_end == 1) & (size >= 3)], [2, 1], 0)
    out.mkdir(parents=True, exist_ok=True)
    keep = ["user_idx", "item_idx", "behavior_idx", "timestamp", "split"]
    frame[keep].to_parquet(out / "events.parquet", index=False)
    pd.DataFrame({"user_idx": np.arange(1, len(users) + 1), "user_id": users}).to_parquet(
        out / "users.parquet", index=False
    )
    pd.DataFrame({"item_idx": np.arange(1, len(items) + 1), "item_id": items}).to_parquet(
        out / "items.parquet", index=False
    )
    (out / "behaviors.txt").write_text("\n".join(["<pad>", *map(str, behaviors)]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("events", type=Path)
    parser.add_argument("--format", required=True, choices=["csv", "movielens", "sequences"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    prepare(args.events, args.format, args.out)


if __name__ == "__main__":
    main()
