"""A social graph as context: the recent events of the people a user trusts enter that user's history.

    prepare.social.trusts = "trusts.txt"     # trustor, trustee per line (CiaoDVD, Epinions: who trusts whom)

For every trustor, the latest ``max_events`` events of the users they trust are copied into the trustor's
sequence, each with its own time, under a behaviour of its own ("trusted like" beside "like"), so the model
can tell "a friend liked it" from "I liked it" and learns how much the first says about the second.

Causality: only events of the TRAIN period are copied, and only on a temporal split, whose TRAIN period ends
before every validation and test event. A copied event is therefore known before any target it can precede,
and the split stays monotone in every sequence (TRAIN … VALID … TEST). Copies are TRAIN events: the model
learns from them as from any history event. They are never evaluation targets, which come from the VALID and
TEST splits. Only a graph between users of the log counts: an edge to an unknown user is counted and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from nextaction.config import known_options
from nextaction.data.dataset import PreparedDataset
from nextaction.data.readers.frames import side_table
from nextaction.data.schema import BEHAVIOR_IDX, SPLIT, TIMESTAMP, TRAIN, USER_ID, USER_IDX
from nextaction.errors import InputError


@dataclass(frozen=True, kw_only=True)
class SocialConfig:
    """``trusts``: a CSV/TSV of (trustor, trustee) user ids, with or without a header (first two columns);
    ``max_events``: trusted events kept per trustor (the latest); ``prefix`` names their behaviours."""

    trusts: str | None = None
    max_events: int = 20
    prefix: str = "trusted "

    def __post_init__(self) -> None:
        m = self.max_events
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise InputError(f"social.max_events must be a whole number ≥ 1, got {m!r}")
        if not isinstance(self.prefix, str) or not self.prefix.strip():
            raise InputError("social.prefix must be a non-empty name prefix, e.g. 'trusted '")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SocialConfig:
        return cls(**known_options(cls, data, "social"))


def read_edges(path: str | Path) -> pl.DataFrame:
    """(trustor, trustee) user ids as text from the first two columns of a CSV/TSV (header optional)."""
    p = Path(path).expanduser()
    frame = side_table(p, what="social.trusts", hint="give a CSV of trustor,trustee user ids", header=None)
    if frame.width < 2:
        raise InputError("social.trusts needs two columns, trustor and trustee", path=p)
    cols = frame.columns[:2]
    return frame.select(
        pl.col(cols[0]).str.strip_chars().alias("trustor"), pl.col(cols[1]).str.strip_chars().alias("trustee")
    )


def add_trusted_events(
    data: PreparedDataset, edges: pl.DataFrame, *, max_events: int = 20, prefix: str = "trusted "
) -> tuple[PreparedDataset, dict[str, Any]]:
    """``data`` with every trustor's latest ``max_events`` TRAIN-period events of trusted users copied into
    their history (see the module docstring). Returns the dataset and what was done (for the report)."""
    kind = data.report.get("split", {}).get("kind")
    if kind != "temporal":
        raise InputError(
            f"a trust graph needs a temporal split (this log's is {kind!r}): only then are the trusted users' "
            'copied events known before every validation and test target; set prepare.split.kind="temporal"'
        )
    ids = data.users.select(pl.col(USER_ID), pl.col(USER_IDX))
    resolved = (
        edges.join(ids.rename({USER_ID: "trustor", USER_IDX: "src"}), on="trustor", how="left")
        .join(ids.rename({USER_ID: "trustee", USER_IDX: "dst"}), on="trustee", how="left")
        .unique(["trustor", "trustee"])
    )
    usable = resolved.filter(
        pl.col("src").is_not_null() & pl.col("dst").is_not_null() & (pl.col("src") != pl.col("dst"))
    )
    own = data.events
    train = own.filter(pl.col(SPLIT) == TRAIN)
    nb = len(data.behaviors) - 1
    copies = (
        usable.select("src", "dst")
        .join(train, left_on="dst", right_on=USER_IDX, how="inner")
        .sort(["src", TIMESTAMP], descending=[False, True])
        .group_by("src", maintain_order=True)
        .head(max_events)
        .with_columns(
            pl.col("src").alias(USER_IDX),
            (pl.col(BEHAVIOR_IDX) + nb).cast(own.schema[BEHAVIOR_IDX]),
            pl.lit(TRAIN, dtype=own.schema[SPLIT]).alias(SPLIT),
        )
        .select(own.columns)
    )
    events = pl.concat([own, copies]).sort([USER_IDX, TIMESTAMP], maintain_order=True)
    behaviors = [*data.behaviors, *(f"{prefix}{b}" for b in data.behaviors[1:])]
    info = {
        "trusts": int(edges.height),
        "edges_used": int(usable.height),
        "edges_unknown_user": int(resolved.height - usable.height),
        "trustors_with_context": int(copies[USER_IDX].n_unique()),
        "context_events": int(copies.height),
        "max_events": max_events,
        "behaviors": behaviors[len(data.behaviors) :],
    }
    report = dict(data.report, social=info)
    out = PreparedDataset(
        events=events, users=data.users, items=data.items, behaviors=behaviors, report=report
    )
    return out, info
