"""Batch scoring's files: lists of users and (user, item) pairs in, Parquet out (atomically), and behaviour
probabilities for every pair. The scoring of every user itself is ``Predictor.recommend_all``: histories
straight from the model directory's CSR arrays, users in chunks, the answers of ``Predictor.recommend``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from nextaction.errors import InputError

if TYPE_CHECKING:
    from nextaction.predictor import Predictor

USER_ID, ITEM_ID = "user_id", "item_id"
Progress = Callable[[int, int], None]


def read_user_list(path: str | Path) -> list[str]:
    """User ids, one per line, or a CSV/TSV/Parquet with a ``user_id`` column."""
    p = Path(path)
    if not p.is_file():
        raise InputError(
            "file not found; give a file of user ids (one per line, or a user_id column)", path=p
        )
    if p.suffix == ".parquet":
        frame = pl.read_parquet(p)
    else:
        text = p.read_text(encoding="utf-8", errors="replace").splitlines()
        if not text or "user_id" not in text[0].split("," if "," in text[0] else "\t"):
            return [line.strip() for line in text if line.strip()]
        frame = pl.read_csv(p, separator="," if "," in text[0] else "\t", infer_schema=False)
    if USER_ID not in frame.columns:
        raise InputError(f"has no user_id column (columns: {', '.join(frame.columns)})", path=p)
    return [str(u) for u in frame[USER_ID].to_list()]


def write_parquet_atomic(frame: pl.DataFrame, out: str | Path) -> Path:
    """Write to a temporary file beside ``out``, then rename: a reader never sees half a file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def read_pairs(path: str | Path) -> pl.DataFrame:
    """A CSV/TSV/Parquet with ``user_id`` and ``item_id`` columns (ids as strings)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found; give a CSV with user_id,item_id columns", path=p)
    if p.suffix == ".parquet":
        frame = pl.read_parquet(p)
    else:
        first = p.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        frame = pl.read_csv(p, separator="\t" if "\t" in first else ",", infer_schema=False)
    missing = [c for c in (USER_ID, ITEM_ID) if c not in frame.columns]
    if missing:
        raise InputError(
            f"line 1: no {' and no '.join(missing)} column (columns: {', '.join(frame.columns)}); "
            "give a header user_id,item_id",
            path=p,
        )
    return frame.select(pl.col(USER_ID).cast(pl.Utf8), pl.col(ITEM_ID).cast(pl.Utf8))


def predict_pairs(
    p: Predictor, pairs: pl.DataFrame, *, next_event: bool = False, progress: Progress | None = None
) -> pl.DataFrame:
    """P(behaviour) for every (user_id, item_id) row, in the input's order: one column per behaviour and a
    ``note`` (null, "unknown user": predicted from an empty history, or "unknown item": no probabilities).
    ``next_event``: which behaviour the next event is, given it is on the item (``predict --next``)."""
    out: dict[int, dict[str, float] | None] = {}
    notes: dict[int, str] = {}
    groups = pairs.with_row_index("_row").group_by(USER_ID, maintain_order=True).agg("_row", ITEM_ID)
    for g, (user, rows, items) in enumerate(groups.iter_rows()):
        known = p.knows_user(user)
        history = p.history(user, split="all") if known else []
        probs = p.outcome(history, items) if next_event else p.predict(history, items)
        for row, item in zip(rows, items, strict=True):
            out[row] = probs[str(item)]
            if out[row] is None:
                notes[row] = "unknown item"
            elif not known:
                notes[row] = "unknown user"
        if progress is not None:
            progress(g + 1, groups.height)
    columns: dict[str, list[object]] = {USER_ID: pairs[USER_ID].to_list(), ITEM_ID: pairs[ITEM_ID].to_list()}
    for b in p.behaviors:
        columns[b] = [None if out[r] is None else out[r][b] for r in range(pairs.height)]  # type: ignore[index]
    columns["note"] = [notes.get(r) for r in range(pairs.height)]
    schema = {USER_ID: pl.Utf8, ITEM_ID: pl.Utf8, **{b: pl.Float64 for b in p.behaviors}, "note": pl.Utf8}
    return pl.DataFrame(columns, schema=schema)
