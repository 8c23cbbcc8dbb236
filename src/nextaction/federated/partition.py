"""Split one prepared log into client logs with disjoint users: the federation of a demo or a benchmark.

In a real federation each client already holds its own log; this module builds such logs from one
dataset so that a federated model can be compared with the centralised model of the same events.

Every client log is a normal prepared dataset (``PreparedDataset``) that keeps the whole item catalogue and
behaviour list (item and behaviour indices mean the same thing on every client and on the server: the
catalogue is public, the events are not), its own users renumbered 1..U, and their events with their
split labels unchanged.

Two ways to split:
- ``iid``: users drawn at random, every client the same size (±1).
- an item column (``category``): each user goes with the value of that column that is most frequent among
  their TRAIN events (their dominant category); values are dealt, largest first, to the client with the
  fewest users so far. Clients then see different parts of the catalogue (non-IID).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import ITEM_IDX, TRAIN, USER_IDX
from nextaction.errors import InputError
from nextaction.training.loop import held_out_users
from nextaction.training.state import TrainConfig

IID = "iid"


def dominant_values(data: PreparedDataset, values: np.ndarray) -> np.ndarray:
    """(n_users + 1,) int: per user, the most frequent code of ``values`` (an (n_items + 1,) int array of
    item codes, -1 = none) among their TRAIN events; -1 for users without a coded training event."""
    seqs = data.seqs
    split = np.asarray(seqs.split)
    items = np.asarray(seqs.items)
    users = np.repeat(np.arange(seqs.n_users), np.diff(np.asarray(seqs.offsets)))
    codes = values[items]
    ok = (split == TRAIN) & (codes >= 0)
    out = np.full(seqs.n_users, -1, dtype=np.int64)
    if not ok.any():
        return out
    n_codes = int(codes[ok].max()) + 1
    pair = users[ok] * n_codes + codes[ok]
    uniq, counts = np.unique(pair, return_counts=True)
    u, c = uniq // n_codes, uniq % n_codes
    # per user, the code with the largest count (ties: the smallest code, for a deterministic split)
    order = np.lexsort((c, -counts, u))
    first = np.ones(len(order), dtype=bool)
    first[1:] = u[order][1:] != u[order][:-1]
    out[u[order][first]] = c[order][first]
    return out


def item_codes(data: PreparedDataset, column: str, *, segment: int | None = None) -> np.ndarray:
    """(n_items + 1,) int codes of an item column (-1 for padding and missing values). ``segment``: split the
    value on '|' and keep that part (-1 = the last, e.g. the leaf of a category path)."""
    if column not in data.items.columns:
        raise InputError(
            f"the items have no column '{column}' (they have: {', '.join(data.items.columns)}); "
            "prepare the log with --items TABLE, or split with --by iid"
        )
    col = data.items[column].cast(pl.Utf8)
    if segment is not None:
        col = col.str.split("|").list.get(segment, null_on_oob=True).str.strip_chars()
    codes = col.fill_null("").cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    codes[(col.is_null() | (col == "")).to_numpy()] = -1
    out = np.full(data.n_items + 1, -1, dtype=np.int64)
    out[data.items[ITEM_IDX].to_numpy()] = codes
    return out


def split_users(
    data: PreparedDataset,
    n_clients: int,
    *,
    by: str = IID,
    segment: int | None = None,
    seed: int = 0,
    holdout_users: int = 0,
) -> list[np.ndarray]:
    """``n_clients`` disjoint sorted arrays of user indices that together hold every user except the
    ``holdout_users`` that ``train.holdout_users`` holds out (the same users: see training.loop)."""
    if n_clients < 1:
        raise InputError(f"--clients must be at least 1, got {n_clients}")
    users = np.arange(1, data.n_users + 1)
    if holdout_users:
        held = held_out_users(data, TrainConfig(holdout_users=holdout_users))
        users = np.setdiff1d(users, held if held is not None else [])
    if n_clients > len(users):
        raise InputError(f"--clients {n_clients} is more than the log's {len(users)} users")
    rng = np.random.default_rng(seed)
    if by == IID:
        return [np.sort(p) for p in np.array_split(rng.permutation(users), n_clients)]
    dominant = dominant_values(data, item_codes(data, by, segment=segment))[users]
    groups = [users[dominant == v] for v in np.unique(dominant)]
    groups.sort(key=len, reverse=True)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    sizes = np.zeros(n_clients, dtype=np.int64)
    for g in groups:
        k = int(np.argmin(sizes))
        parts[k].append(g)
        sizes[k] += len(g)
    if (sizes == 0).any():
        raise InputError(
            f"--by {by}: only {len(groups)} distinct dominant values for {n_clients} clients; use fewer clients"
        )
    return [np.sort(np.concatenate(p)) for p in parts]


def client_dataset(data: PreparedDataset, users: np.ndarray, *, client: int, clients: int) -> PreparedDataset:
    """The log of ``users`` alone: their events, renumbered 1..len(users), with the whole catalogue."""
    remap = np.zeros(data.n_users + 1, dtype=np.int64)
    remap[users] = np.arange(1, len(users) + 1)
    keep = pl.Series("keep", np.isin(data.events[USER_IDX].to_numpy(), users))
    events = data.events.filter(keep).with_columns(
        pl.Series(USER_IDX, remap[data.events.filter(keep)[USER_IDX].to_numpy()])
    )
    taken = data.users.filter(pl.col(USER_IDX).is_in(users.tolist())).sort(USER_IDX)
    taken = taken.with_columns(pl.Series(USER_IDX, remap[taken[USER_IDX].to_numpy()]))
    report = dict(data.report, federated={"client": client, "clients": clients, "users": len(users)})
    return PreparedDataset(
        events=events, users=taken, items=data.items, behaviors=data.behaviors, report=report
    )


def write_clients(
    data: PreparedDataset,
    out: str | Path,
    n_clients: int,
    *,
    by: str = IID,
    segment: int | None = None,
    seed: int = 0,
    holdout_users: int = 0,
) -> list[Path]:
    """Write ``out/client-00`` … one prepared dataset per client and ``out/split.json``; return the dirs."""
    out = Path(out)
    parts = split_users(data, n_clients, by=by, segment=segment, seed=seed, holdout_users=holdout_users)
    dirs = []
    for k, users in enumerate(parts):
        d = out / f"client-{k:02d}"
        client_dataset(data, users, client=k, clients=n_clients).save(d)
        dirs.append(d)
    summary = {
        "clients": n_clients,
        "by": by,
        "segment": segment,
        "seed": seed,
        "holdout_users": holdout_users,
        "users": [len(p) for p in parts],
        "events": [int(np.diff(np.asarray(data.seqs.offsets))[p].sum()) for p in parts],
    }
    tmp = out / ".split.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "split.json")
    return dirs
