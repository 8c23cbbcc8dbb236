"""A trust graph as context (data/social.py): trusted users' TRAIN-period events in trustors' histories."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from tests.factories import events_dataset

from nextaction.data.dataset import PreparedDataset
from nextaction.data.schema import BEHAVIOR_IDX, SPLIT, TEST, TIMESTAMP, TRAIN, USER_IDX, VALID
from nextaction.data.social import SocialConfig, add_trusted_events, read_edges
from nextaction.errors import InputError

DAY = 86_400_000


def small_log() -> PreparedDataset:
    # users u1 (trustor), u2 and u3 (trusted), u4 (nobody); valid from day 10, test from day 20
    rows = [
        (1, 1, 1, 1 * DAY, TRAIN), (1, 2, 1, 12 * DAY, VALID), (1, 3, 1, 21 * DAY, TEST),
        (2, 4, 1, 2 * DAY, TRAIN), (2, 5, 2, 3 * DAY, TRAIN), (2, 6, 1, 15 * DAY, VALID),
        (3, 7, 1, 4 * DAY, TRAIN), (3, 8, 1, 22 * DAY, TEST),
        (4, 1, 1, 5 * DAY, TRAIN),
    ]  # fmt: skip
    return events_dataset(
        rows, n_users=4, n_items=8, behaviors=["<pad>", "view", "like"], split_kind="temporal"
    )


def test_trusted_events_are_the_train_period_only_with_their_own_behaviours() -> None:
    data = small_log()
    edges = pl.DataFrame({"trustor": ["u1", "u1", "u1", "u9"], "trustee": ["u2", "u3", "u1", "u1"]})
    out, info = add_trusted_events(data, edges, max_events=2)
    assert out.behaviors == ["<pad>", "view", "like", "trusted view", "trusted like"]
    u1 = out.events.filter(pl.col(USER_IDX) == 1)
    copies = u1.filter(pl.col(BEHAVIOR_IDX) >= 3)
    # the latest 2 TRAIN events of u2 and u3 (days 3 and 4): never u2's VALID day 15 nor u3's TEST day 22
    assert sorted(copies[TIMESTAMP].to_list()) == [3 * DAY, 4 * DAY]
    assert set(copies[SPLIT].to_list()) == {TRAIN}
    assert sorted(copies[BEHAVIOR_IDX].to_list()) == [3, 4]  # like → trusted like, view → trusted view
    # the split stays monotone: every copy precedes the trustor's first VALID event
    splits = u1.sort(TIMESTAMP)[SPLIT].to_list()
    assert splits == sorted(splits)
    assert info["edges_unknown_user"] == 2  # the self-loop and the unknown u9
    assert info["context_events"] == 2 and info["trustors_with_context"] == 1
    assert out.events.filter(pl.col(USER_IDX) != 1).height == data.events.filter(pl.col(USER_IDX) != 1).height


def test_a_trust_graph_needs_a_temporal_split_and_a_readable_file(tmp_path: Path) -> None:
    data = small_log()
    data.report["split"]["kind"] = "leave_one_out"
    with pytest.raises(InputError, match="temporal split"):
        add_trusted_events(data, pl.DataFrame({"trustor": ["u1"], "trustee": ["u2"]}))
    path = tmp_path / "trusts.txt"
    path.write_text("8874,14430,1\n6417,17660,1\n")  # CiaoDVD: no header, a trust value
    assert read_edges(path).rows() == [("8874", "14430"), ("6417", "17660")]
    path.write_text("trustor\ttrustee\nu1\tu2\n")
    assert read_edges(path).rows() == [("u1", "u2")]
    with pytest.raises(InputError, match="no such file"):
        read_edges(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="max_events"):
        SocialConfig(max_events=0)
