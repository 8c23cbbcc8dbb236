"""Readers: every format on tiny files written here, every kind of bad input, and the real data sets."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextaction.data.readers import (
    EVENTS_SCHEMA,
    MAX_LINE_BYTES,
    REJECTS_SCHEMA,
    ReadResult,
    detect_format,
    parse_mapping,
    read_events,
    read_items,
)
from nextaction.data.readers import lines as readers_lines
from nextaction.data.schema import BEHAVIOR, ITEM_ID, LINE, RAW, REASON, TIMESTAMP, USER_ID, VALUE
from nextaction.errors import InputError

T0 = 1_433_221_969  # 2015-06-02, seconds
SHARED = Path(
    os.environ.get("NEXTACTION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def check(result: ReadResult) -> ReadResult:
    """The invariants every result must keep."""
    assert dict(result.events.schema) == EVENTS_SCHEMA
    assert dict(result.rejects.schema) == REJECTS_SCHEMA
    assert result.rows_read == result.events.height + result.rejects.height
    assert result.rejects[LINE].is_sorted()
    return result


def one_line_error(excinfo: pytest.ExceptionInfo[InputError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def rows(result: ReadResult) -> list[tuple]:
    return result.events.select(LINE, USER_ID, ITEM_ID, TIMESTAMP, BEHAVIOR, VALUE).rows()


# ------------------------------------------------------------------------------------ generic formats


def test_csv_with_aliases(tmp_path: Path) -> None:
    path = write(
        tmp_path / "log.csv", f"visitorid,itemid,event,ts,rating\nu1,i1,view,{T0},4.5\nu2,i2,buy,{T0 + 1},\n"
    )
    result = check(read_events(path))
    assert result.format == "csv"
    assert result.source == str(path)
    assert rows(result) == [
        (2, "u1", "i1", T0 * 1000, "view", 4.5),
        (3, "u2", "i2", (T0 + 1) * 1000, "buy", None),
    ]
    assert result.rejects.height == 0
    assert result.items is None


@pytest.mark.parametrize(
    "mapping",
    [
        {"user": "who", "item": "what", "time": "when", "behavior": "how", "value": "much"},
        {USER_ID: "who", ITEM_ID: "what", TIMESTAMP: "when", "behaviour": "how", "value": "much"},
    ],
)
def test_explicit_mapping(tmp_path: Path, mapping: dict[str, str]) -> None:
    path = write(tmp_path / "log.csv", f"who,what,when,how,much\n1,2,{T0},cart,-3.5\n")
    result = check(read_events(path, mapping=mapping))
    assert rows(result) == [(2, "1", "2", T0 * 1000, "cart", -3.5)]  # negative values are legitimate


def test_mapping_overrides_aliases_and_none_ignores_a_column(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", f"user,item,time,date,type\nu,i,{T0},2015-01-01,view\n")
    result = check(read_events(path, mapping={"time": "date", "behavior": None}))
    assert rows(result) == [(2, "u", "i", 1_420_070_400_000, None, None)]


def test_tsv_by_extension_and_by_name(tmp_path: Path) -> None:
    text = f"user_id\titem_id\ttimestamp\n1\t2\t{T0}\n"
    assert check(read_events(write(tmp_path / "a.tsv", text))).format == "tsv"
    result = check(read_events(write(tmp_path / "a.txt", text), format="tsv"))
    assert rows(result) == [(2, "1", "2", T0 * 1000, None, None)]


@pytest.mark.parametrize("sep", [";", "|", "\t", "::"])
def test_delimiter_is_sniffed(tmp_path: Path, sep: str) -> None:
    lines = sep.join(["user", "item", "timestamp"]) + "\n" + sep.join(["1", "2", str(T0)]) + "\n"
    result = check(read_events(write(tmp_path / "a.csv", lines), format="csv"))
    assert rows(result) == [(2, "1", "2", T0 * 1000, None, None)]


@pytest.mark.parametrize("sep", ["\\t", "tab", "\t"])
def test_separator_names(tmp_path: Path, sep: str) -> None:
    path = write(tmp_path / "a.csv", f"user\titem\ttime\n1\t2\t{T0}\n")
    assert check(read_events(path, separator=sep)).events.height == 1


def test_quoted_fields_may_hold_the_separator(tmp_path: Path) -> None:
    text = f'user,item,behavior,time\n"u,1","i ""x""",view,{T0}\n"u2",i2,"buy",{T0}\n'
    result = check(read_events(write(tmp_path / "q.csv", text)))
    assert result.events[USER_ID].to_list() == ["u,1", "u2"]
    assert result.events[ITEM_ID].to_list() == ['i "x"', "i2"]
    assert result.events[BEHAVIOR].to_list() == ["view", "buy"]


def test_malformed_quoting_is_a_reject(tmp_path: Path) -> None:
    text = f'user,item,time\n"u"x,i,{T0}\nu,i,{T0}\n'
    result = check(read_events(write(tmp_path / "q.csv", text)))
    assert result.events.height == 1
    assert result.rejects.row(0) == (2, result.rejects[REASON][0], f'"u"x,i,{T0}')
    assert "quot" in result.rejects[REASON][0]


def test_parquet_with_typed_columns(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": [10, 20],
            "datetime": [datetime(2015, 6, 1, tzinfo=UTC), datetime(2015, 6, 2, 12, tzinfo=UTC)],
            "price": [9.5, float("nan")],
        }
    )
    path = tmp_path / "e.parquet"
    frame.write_parquet(path)
    result = check(read_events(path))
    assert result.format == "parquet"
    assert rows(result) == [
        (1, "1", "10", 1_433_116_800_000, None, 9.5),
        (2, "2", "20", 1_433_246_400_000, None, None),  # NaN value → missing
    ]


def test_parquet_that_is_not_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "e.parquet", "user,item\n")
    with pytest.raises(InputError, match="not a readable Parquet file") as excinfo:
        read_events(path)
    assert str(path) in one_line_error(excinfo)


def test_jsonl(tmp_path: Path) -> None:
    lines = [
        {"user": "a", "item": 1, "ts": "2015-06-01T00:00:00Z", "event": "view"},
        {"user": "b", "item": 2, "ts": "2015-06-01 00:00:01", "event": "buy", "value": 3},
    ]
    path = write(tmp_path / "e.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    result = check(read_events(path))
    assert result.format == "jsonl"
    assert rows(result) == [
        (1, "a", "1", 1_433_116_800_000, "view", None),
        (2, "b", "2", 1_433_116_801_000, "buy", 3.0),
    ]


def test_jsonl_bad_lines_are_rejects(tmp_path: Path) -> None:
    text = '{"user": "a", "item": 1, "ts": 5}\n{"user": broken\n[1, 2]\n{"user": "b", "item": 2, "ts": 6}\n'
    result = check(read_events(write(tmp_path / "e.jsonl", text)))
    assert result.events[LINE].to_list() == [1, 4]
    assert result.rejects[LINE].to_list() == [2, 3]
    assert result.rejects[REASON][0].startswith("invalid JSON")
    assert result.rejects[REASON][1] == "line is not a JSON object"


def test_pandas_and_polars_frames() -> None:
    pandas = pd.DataFrame(
        {
            "userId": [1.0, 2.0, None],  # pandas turns int ids with a gap into floats
            "movieId": [5, 6, 7],
            "timestamp": pd.to_datetime(["2015-06-01", "2015-06-02", "2015-06-03"]),
        }
    )
    result = check(read_events(pandas))
    assert result.format == "dataframe"
    assert result.events[USER_ID].to_list() == ["1", "2", None]  # missing ids stay (prepare decides)
    assert result.events[TIMESTAMP].to_list() == [1_433_116_800_000, 1_433_203_200_000, 1_433_289_600_000]
    polars = pl.DataFrame({"user": ["x"], "item": ["y"], "time": [T0]})
    assert rows(check(read_events(polars))) == [(1, "x", "y", T0 * 1000, None, None)]
    assert check(read_events(polars.lazy())).events.height == 1


def test_pandas_mixed_object_ids_and_named_index() -> None:
    mixed = pd.DataFrame({"user": ["a", 1, None], "item": [1, 2, 3], "time": [T0, T0, T0]})
    assert check(read_events(mixed)).events[USER_ID].to_list() == ["a", "1", None]
    indexed = pd.DataFrame({"user": ["a"], "item": [1], "time": ["2015-06-01"]}).set_index("user")
    assert rows(check(read_events(indexed))) == [(1, "a", "1", 1_433_116_800_000, None, None)]


def test_dataframe_rejects_have_a_raw_rendering() -> None:
    frame = pl.DataFrame({"user": ["x", "y"], "item": ["a", "b"], "time": [T0, -1]})
    result = check(read_events(frame))
    assert result.rejects.rows() == [(2, "timestamp '-1' is negative", "y,b,-1")]


def test_sequences(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "1 10 11 12\n\n2 13\n3\n")
    result = check(read_events(path))
    assert result.format == "sequences"
    assert rows(result) == [
        (1, "1", "10", 1000, None, None),
        (1, "1", "11", 2000, None, None),
        (1, "1", "12", 3000, None, None),
        (3, "2", "13", 1000, None, None),
    ]
    assert result.rejects.rows() == [(4, "line has a user id but no items", "3")]


def test_sequences_take_no_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "1 10 11\n")
    with pytest.raises(InputError, match="--map"):
        read_events(path, format="sequences", mapping={"user": "x"})


def test_an_order_column_stands_in_for_the_clock(tmp_path: Path) -> None:
    path = write(
        tmp_path / "kt.csv", "student,problem,seq_pos,correct\n7,p1,0,1\n7,p2,1,0\n8,p1,0,x\n8,p3,one,1\n"
    )
    result = check(
        read_events(
            path, mapping={"user": "student", "item": "problem", "order": "seq_pos", "behavior": "correct"}
        )
    )
    assert result.clock == "positions"
    assert rows(result) == [
        (2, "7", "p1", 0, "1", None),
        (2 + 1, "7", "p2", 1000, "0", None),
        (4, "8", "p1", 0, "x", None),
    ]
    assert result.rejects[LINE].to_list() == [5]  # "one" is not a position: counted and written out
    with pytest.raises(InputError, match="both a time and an order"):
        read_events(path, mapping={"time": "seq_pos", "order": "seq_pos"})


# ---------------------------------------------------------------------------------------- MovieLens


def _ml100k(folder: Path) -> Path:
    folder.mkdir()
    write(folder / "u.data", f"1\t10\t4\t{T0}\n2\t20\t3\t{T0 + 5}\n2\t99\tx\t{T0}\n")
    flags_a = "|".join(["0", "1"] + ["0"] * 17)
    flags_b = "|".join(["0", "1", "1"] + ["0"] * 16)
    items = f"10|Caf\xe9 (1995)|01-Jan-1995||http://x|{flags_a}\n20|Two (1996)|||http://y|{flags_b}\n"
    (folder / "u.item").write_bytes(items.encode("latin-1"))
    return folder


def test_movielens_100k_folder_and_file(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path / "ml-100k")
    for source in (folder, folder / "u.data"):
        result = check(read_events(source))
        assert result.format == "movielens"
        assert rows(result) == [
            (1, "1", "10", T0 * 1000, "rating", 4.0),
            (2, "2", "20", (T0 + 5) * 1000, "rating", 3.0),
        ]
        assert result.rejects.rows() == [(3, "value 'x' is not a number", f"2\t99\tx\t{T0}")]
        assert result.items is not None
        assert result.items.select(ITEM_ID, "title", "genres").rows() == [
            ("10", "Café (1995)", "Action"),
            ("20", "Two (1996)", "Action|Adventure"),
        ]
        assert result.items["release_date"].to_list()[1] is None


def test_movielens_1m_dat(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    write(folder / "ratings.dat", f"1::1193::5::{T0}\n1::661::3::{T0 + 1}\n")
    (folder / "movies.dat").write_bytes(
        "1193::Se\xf1or (1975)::Drama\n661::James (1996)::Animation|Musical\n".encode("latin-1")
    )
    result = check(read_events(folder))
    assert rows(result) == [
        (1, "1", "1193", T0 * 1000, "rating", 5.0),
        (2, "1", "661", (T0 + 1) * 1000, "rating", 3.0),
    ]
    assert result.items is not None
    assert result.items.rows() == [
        ("1193", "Señor (1975)", "Drama"),
        ("661", "James (1996)", "Animation|Musical"),
    ]


def test_movielens_latest_csv(tmp_path: Path) -> None:
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    write(folder / "ratings.csv", f"userId,movieId,rating,timestamp\n1,1,4.0,{T0}\n1,3,4.5,{T0 + 2}\n")
    write(
        folder / "movies.csv",
        'movieId,title,genres\n1,"Toy Story, The (1995)",Adventure|Animation\n3,Heat (1995),Action\n',
    )
    assert detect_format(folder / "ratings.csv") == "movielens"
    result = check(read_events(folder / "ratings.csv"))
    assert result.format == "movielens"
    assert result.events[VALUE].to_list() == [4.0, 4.5]
    assert result.items is not None
    assert result.items["title"].to_list() == ["Toy Story, The (1995)", "Heat (1995)"]


def test_movielens_folder_without_ratings(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="MovieLens") as excinfo:
        read_events(tmp_path, format="movielens")
    one_line_error(excinfo)


# ------------------------------------------------------------------------ RetailRocket, Taobao, OTTO


def test_retailrocket_kaggle(tmp_path: Path) -> None:
    text = (
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,transaction,248676,4000\n"
    )
    path = write(tmp_path / "events.csv", text)
    assert detect_format(path) == "retailrocket"
    result = check(read_events(path))
    assert rows(result) == [
        (2, "257597", "355908", 1_433_221_332_117, "view", None),
        (3, "992329", "248676", 1_433_224_214_164, "transaction", None),
    ]


def test_retailrocket_preprocessed_layout_reads_as_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", f"user_id,item_id,behavior,timestamp\n0,3,view,{T0}\n")
    assert rows(check(read_events(path, format="retailrocket"))) == [(2, "0", "3", T0 * 1000, "view", None)]


@pytest.mark.parametrize("header", ["", "user_id,item_id,category_id,behavior,timestamp\n"])
def test_taobao(tmp_path: Path, header: str) -> None:
    text = header + "1,100,7,pv,1511544070\n1,101,7,buy,1511544071\n2,100,7,cart,1511544072\n"
    path = write(tmp_path / "UserBehavior.csv", text)
    assert detect_format(path) == "taobao"
    assert detect_format(write(tmp_path / "slice.csv", text)) == "taobao"
    result = check(read_events(path))
    offset = 1 if header else 0
    assert rows(result)[0] == (1 + offset, "1", "100", 1_511_544_070_000, "pv", None)
    assert result.events[BEHAVIOR].to_list() == ["pv", "buy", "cart"]
    assert result.items is not None
    assert result.items.rows() == [("100", "7"), ("101", "7")]


def _otto_line(session: int, events: list[tuple[int, int, str]]) -> str:
    return json.dumps({"session": session, "events": [{"aid": a, "ts": t, "type": k} for a, t, k in events]})


def test_otto(tmp_path: Path) -> None:
    ms = 1_659_304_800_025
    text = "\n".join(
        [
            _otto_line(0, [(11, ms, "clicks"), (12, ms + 5, "carts")]),
            _otto_line(1, []),
            _otto_line(2, [(13, ms + 9, "orders")]),
        ]
    )
    path = write(tmp_path / "train.jsonl", text + "\n")
    assert detect_format(path) == "otto"
    result = check(read_events(path))
    assert rows(result) == [
        (1, "0", "11", ms, "clicks", None),
        (1, "0", "12", ms + 5, "carts", None),
        (3, "2", "13", ms + 9, "orders", None),
    ]
    assert result.rejects.select(LINE, REASON).rows() == [(2, "session has no events")]


def test_otto_malformed_line_falls_back_to_careful_parsing(tmp_path: Path) -> None:
    ms = 1_659_304_800_025
    text = "\n".join(
        [
            _otto_line(0, [(11, ms, "clicks")]),
            '{"session": 1, "events": [',
            _otto_line(2, [(13, ms, "carts")]),
        ]
    )
    result = check(read_events(write(tmp_path / "train.jsonl", text), format="otto"))
    assert result.events.select(LINE, USER_ID, ITEM_ID, TIMESTAMP).rows() == [
        (1, "0", "11", ms),
        (3, "2", "13", ms),
    ]
    assert result.rejects[LINE].to_list() == [2]
    assert result.rejects[REASON][0].startswith("invalid JSON")


# ------------------------------------------------------------------------------------- item tables


def test_read_items_csv_and_frames(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "itemid,title,price,stock\n007,A,9.5,3\n2,B,,4\n")
    items = read_items(path)
    assert items.columns == [ITEM_ID, "title", "price", "stock"]
    assert items.rows() == [("007", "A", 9.5, 3), ("2", "B", None, 4)]  # ids stay text
    assert read_items(write(tmp_path / "ids.csv", "item\n1\n2\n")).rows() == [("1",), ("2",)]
    frame = read_items(pl.DataFrame({"sku": [1, 2], "brand": ["x", "y"]}), mapping={"item": "sku"})
    assert frame.rows() == [("1", "x"), ("2", "y")]


def test_read_items_rejects_duplicates_and_missing_ids(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="more than once"):
        read_items(write(tmp_path / "a.csv", "item,t\n1,a\n1,b\n"))
    with pytest.raises(InputError, match="no item id column"):
        read_items(write(tmp_path / "b.csv", "name,t\n1,a\n"))
    with pytest.raises(InputError, match="no item id"):
        read_items(write(tmp_path / "c.csv", "item,t\n,a\n"))


def test_read_items_movielens_files(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path / "ml")
    assert read_items(folder / "u.item")["genres"].to_list() == ["Action", "Action|Adventure"]


# ---------------------------------------------------------------------------- explicit names, detection


def _fixture(folder: Path, fmt: str) -> Path:
    """A one-event file of ``fmt`` under a name that gives nothing away."""
    folder.mkdir()
    path = folder / "data.bin"
    if fmt == "parquet":
        pl.DataFrame({"user": ["u"], "item": ["i"], "ts": [T0]}).write_parquet(path)
    elif fmt == "movielens":
        write(folder / "u.data", f"u\ti\t5\t{T0}\n")
        return folder
    else:
        text = {
            "csv": f"user,item,ts\nu,i,{T0}\n",
            "tsv": f"user\titem\tts\nu\ti\t{T0}\n",
            "jsonl": json.dumps({"user": "u", "item": "i", "ts": T0}) + "\n",
            "sequences": "u i\n",
            "retailrocket": f"timestamp,visitorid,event,itemid,transactionid\n{T0 * 1000},u,view,i,\n",
            "taobao": f"u,i,7,pv,{T0}\n",
            "otto": _otto_line(0, [(1, T0 * 1000, "clicks")])
            .replace('"session": 0', '"session": "u"')
            .replace('"aid": 1', '"aid": "i"'),
        }[fmt]
        write(path, text)
    return path


@pytest.mark.parametrize(
    "fmt", ["csv", "tsv", "parquet", "jsonl", "sequences", "movielens", "retailrocket", "taobao", "otto"]
)
def test_every_format_by_explicit_name(tmp_path: Path, fmt: str) -> None:
    result = check(read_events(_fixture(tmp_path / "f", fmt), format=fmt))
    assert result.format == fmt
    assert result.events.select(USER_ID, ITEM_ID).rows() == [("u", "i")]
    expected = 1000 if fmt == "sequences" else T0 * 1000
    assert result.events[TIMESTAMP].to_list() == [expected]


@pytest.mark.parametrize(
    ("name", "content", "fmt"),
    [
        ("a.csv", "user,item,time\n1,2,3\n", "csv"),
        ("a.txt", "user\titem\ttime\n1\t2\t3\n", "csv"),
        ("a.tsv", "user\titem\ttime\n1\t2\t3\n", "tsv"),
        ("a.txt", "1 2 3 4\n2 5\n", "sequences"),
        ("a.json", '{"user": 1}\n', "jsonl"),
        ("a.jsonl", '{"session": 1, "events": []}\n', "otto"),
        ("u.data", "1\t2\t3\t4\n", "movielens"),
        ("ratings.dat", "1::2::3::4\n", "movielens"),
        ("UserBehavior.csv", "1,2,3,pv,4\n", "taobao"),
        ("events.csv", "timestamp,visitorid,event,itemid,transactionid\n", "retailrocket"),
        ("a.parquet", "", "parquet"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, content: str, fmt: str) -> None:
    assert detect_format(write(tmp_path / name, content)) == fmt


def test_parse_mapping() -> None:
    assert parse_mapping("user=visitorid, item=itemid,time=ts,behavior=") == {
        "user": "visitorid",
        "item": "itemid",
        "time": "ts",
        "behavior": None,
    }
    assert parse_mapping(None) == {}
    with pytest.raises(InputError, match="key=column pairs"):
        parse_mapping("user")
    with pytest.raises(InputError, match="unknown --map key 'who'"):
        parse_mapping("who=x")


# --------------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as excinfo:
        read_events(tmp_path / "nope.csv")
    assert "nope.csv" in one_line_error(excinfo)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory") as excinfo:
        read_events(tmp_path, format="csv")
    one_line_error(excinfo)
    with pytest.raises(InputError, match="directory"):
        read_events(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(InputError, match="empty") as excinfo:
        read_events(write(tmp_path / "e.csv", content))
    one_line_error(excinfo)


def test_header_only(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="header but no data rows"):
        read_events(write(tmp_path / "e.csv", "user_id,item_id,timestamp\n"))


def test_wrong_delimiter_names_the_one_found(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", f"user;item;time\n1;2;{T0}\n")
    with pytest.raises(InputError) as excinfo:
        read_events(path, separator=",")
    message = one_line_error(excinfo)
    assert "','" in message
    assert "--sep ';'" in message


def test_missing_columns_lists_columns_and_suggests_map(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", f"who,item,when\n1,2,{T0}\n")
    with pytest.raises(InputError) as excinfo:
        read_events(path)
    message = one_line_error(excinfo)
    assert "user, time" in message
    assert "who, item, when" in message
    assert "--map user=…,item=…,time=…" in message


def test_headerless_csv_needs_positions(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", f"1,2,{T0}\n3,4,{T0}\n")
    with pytest.raises(InputError, match="column_1, column_2, column_3"):
        read_events(path)
    result = check(read_events(path, mapping={"user": "1", "item": "column_2", "time": "3"}))
    assert rows(result)[1] == (2, "3", "4", T0 * 1000, None, None)


def test_bad_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", f"user,item,time\n1,2,{T0}\n")
    with pytest.raises(InputError, match="unknown --map key 'usr'; known keys: user"):
        read_events(path, mapping={"usr": "user"})
    with pytest.raises(
        InputError, match="--map user=visitor: no such column; columns found: user, item, time"
    ):
        read_events(path, mapping={"user": "visitor"})


def test_unknown_format_and_misplaced_sep(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", f"user,item,time\n1,2,{T0}\n")
    with pytest.raises(InputError, match="unknown format 'xls'"):
        read_events(path, format="xls")
    with pytest.raises(InputError, match="--sep"):
        read_events(pl.DataFrame({"user": [1]}), separator=",")


def test_invalid_utf8_rows_are_rejects(tmp_path: Path) -> None:
    data = f"user,item,time\nu\xe9,1,{T0}\n".encode("latin-1") + f"ok,2,{T0}\n".encode()
    result = check(read_events(write(tmp_path / "e.csv", data)))
    assert result.events[USER_ID].to_list() == ["ok"]
    assert result.rejects.select(LINE, REASON).rows() == [(2, "invalid UTF-8")]


def test_invalid_utf8_next_to_real_replacement_characters(tmp_path: Path) -> None:
    # A genuine U+FFFD in the file makes the fast path ambiguous: the careful path must sort it out.
    data = b"user,item,time\n" + f"\ufffd,1,{T0}\n".encode() + f"x\xff,2,{T0}\nz,3,{T0}\n".encode("latin-1")
    result = check(read_events(write(tmp_path / "e.csv", data)))
    assert result.events[USER_ID].to_list() == ["\ufffd", "z"]
    assert result.rejects.select(LINE, REASON).rows() == [(3, "invalid UTF-8")]


def test_nul_bytes_take_the_careful_path(tmp_path: Path) -> None:
    data = f"user,item,time\na\x00b,1,{T0}\nc,2,{T0}\n".encode()
    result = check(read_events(write(tmp_path / "e.csv", data)))
    assert result.events[USER_ID].to_list() == ["a\x00b", "c"]


def test_binary_or_other_encodings_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", bytes(range(128, 256)) * 4 + b"\n" + bytes(range(200, 256)) + b"\n")
    with pytest.raises(InputError, match="is not UTF-8 text") as excinfo:
        read_events(path)
    one_line_error(excinfo)


def test_archives_are_refused_and_gzip_is_read(tmp_path: Path) -> None:
    import gzip
    import zipfile

    text = f"user,item,time\n1,2,{T0}\n"
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as zipped:
        zipped.writestr("e.csv", text)
    with pytest.raises(InputError, match="is a zip archive; unpack it"):
        read_events(tmp_path / "e.zip", format="csv")
    (tmp_path / "e.csv.gz").write_bytes(gzip.compress(text.encode()))
    assert rows(check(read_events(tmp_path / "e.csv.gz"))) == [(2, "1", "2", T0 * 1000, None, None)]


def test_parquet_is_detected_by_content(tmp_path: Path) -> None:
    pl.DataFrame({"user": ["u"], "item": ["i"], "ts": [T0]}).write_parquet(tmp_path / "events.dat")
    assert detect_format(tmp_path / "events.dat") == "parquet"


def test_unclosed_quote_is_a_reject(tmp_path: Path) -> None:
    result = check(read_events(write(tmp_path / "q.csv", f'user,item,time\n"1,2,{T0}\n3,4,{T0}\n')))
    assert result.events[USER_ID].to_list() == ["3"]
    assert result.rejects[LINE].to_list() == [2]
    assert "quot" in result.rejects[REASON][0]


def test_wrong_field_count_is_a_reject_with_its_line(tmp_path: Path) -> None:
    text = f"user,item,time\n1,2,{T0}\n1,2\n\n1,2,{T0},extra\n3,4,{T0}\n"
    result = check(read_events(write(tmp_path / "e.csv", text)))
    assert result.events[LINE].to_list() == [2, 6]
    assert result.rejects.rows() == [
        (3, "expected 3 fields separated by ',', found 2", "1,2"),
        (5, "expected 3 fields separated by ',', found 4", f"1,2,{T0},extra"),
    ]


def test_absurdly_long_line_is_a_reject(tmp_path: Path) -> None:
    long_item = "x" * (MAX_LINE_BYTES + 10)
    text = f"user,item,time\n1,{long_item},{T0}\n2,3,{T0}\n"
    result = check(read_events(write(tmp_path / "e.csv", text)))
    assert result.events[USER_ID].to_list() == ["2"]
    (line, reason, raw) = result.rejects.row(0)
    assert line == 2
    assert "longer than" in reason
    assert len(raw) < 300


def test_empty_ids_stay_as_missing(tmp_path: Path) -> None:
    text = f"user,item,time,behavior\n,1,{T0},view\n2, ,{T0},\n"
    result = check(read_events(write(tmp_path / "e.csv", text)))
    assert rows(result) == [(2, None, "1", T0 * 1000, "view", None), (3, "2", None, T0 * 1000, None, None)]


def test_values_nan_is_missing_and_text_is_a_reject(tmp_path: Path) -> None:
    text = f"user,item,time,value\n1,1,{T0},NaN\n1,2,{T0},-2.5\n1,3,{T0},abc\n1,4,{T0},inf\n"
    result = check(read_events(write(tmp_path / "e.csv", text)))
    assert result.events[VALUE].to_list() == [None, -2.5]
    assert result.rejects.select(LINE, REASON).rows() == [
        (4, "value 'abc' is not a number"),
        (5, "value 'inf' is not finite"),
    ]


def test_bad_timestamps_are_rejects(tmp_path: Path) -> None:
    text = "user,item,time\n1,1,2015-06-01\n1,2,2015-13-45\n1,3,1433221969\n1,4,\n"
    result = check(read_events(write(tmp_path / "e.csv", text)))
    assert result.events.select(LINE, TIMESTAMP).rows() == [(2, 1_433_116_800_000), (5, None)]
    assert result.rejects.select(LINE, REASON).rows() == [
        (3, "timestamp '2015-13-45' is not a valid ISO-8601 date"),
        (4, "timestamp '1433221969' is a number but the rest of the column holds ISO-8601 dates"),
    ]


def test_negative_and_nan_timestamps_are_rejects(tmp_path: Path) -> None:
    text = f"user,item,time\n1,1,{T0}\n1,2,-5\n1,3,nan\n"
    result = check(read_events(write(tmp_path / "e.csv", text)))
    assert result.rejects.select(LINE, REASON).rows() == [
        (3, "timestamp '-5' is negative"),
        (4, "timestamp 'nan' is NaN"),
    ]


def test_a_column_without_any_timestamp_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "user,item,time\n1,1,yesterday\n1,2,today\n")
    with pytest.raises(InputError, match="column 'time': holds no timestamps") as excinfo:
        read_events(path)
    assert str(path) in one_line_error(excinfo)


def test_crlf_bom_and_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    data = f"\ufeffuser,item,time\r\n1,2,{T0}\r\n\r\n3,4,{T0}\r\n".encode()
    result = check(read_events(write(tmp_path / "e.csv", data)))
    assert rows(result) == [(2, "1", "2", T0 * 1000, None, None), (4, "3", "4", T0 * 1000, None, None)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.tuples(
            st.text(
                st.characters(blacklist_categories=["Cs", "Cc", "Zs", "Zl", "Zp"]), min_size=1, max_size=5
            ),
            st.integers(0, 10**6),
            st.integers(0, 4_000_000_000),
            st.sampled_from(["view", "cart", "buy"]),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_csv_round_trip(tmp_path: Path, events: list[tuple[str, int, int, str]]) -> None:
    frame = pl.DataFrame(events, schema=["user", "item", "ts", "event"], orient="row")
    path = tmp_path / "rt.csv"
    frame.write_csv(path)  # quotes fields that need it
    result = check(read_events(path, format="csv"))
    assert result.rejects.height == 0
    assert result.events[USER_ID].to_list() == [u.strip() for u in frame["user"].to_list()]
    assert result.events[ITEM_ID].to_list() == [str(i) for i in frame["item"].to_list()]
    assert result.events[TIMESTAMP].to_list() == [t * 1000 for t in frame["ts"].to_list()]


_JUNK = [
    b",",
    b"\t",
    b";",
    b"|",
    b"::",
    b'"',
    b"\n",
    b"\r\n",
    b" ",
    b"1",
    b"1433221969",
    b"2015-06-01",
    b"T10:00Z",
]
_JUNK += [
    b"user",
    b"item",
    b"time",
    b"view",
    b"nan",
    b"-",
    b"\xff",
    b"\x00",
    b"{",
    b"}",
    b'"events"',
    b":",
    b"abc",
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(_JUNK), max_size=60), header=st.booleans())
def test_junk_gives_a_result_or_an_input_error(tmp_path: Path, parts: list[bytes], header: bool) -> None:
    path = write(tmp_path / "junk.txt", (b"user,item,time\n" if header else b"") + b"".join(parts))
    for fmt in (None, "csv", "jsonl", "otto", "sequences", "taobao", "movielens"):
        try:
            check(read_events(path, format=fmt))
        except InputError as err:
            assert "\n" not in str(err)


# ----------------------------------------------------------------------------------------- real data

realdata = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")


@pytest.mark.realdata
@realdata
def test_real_beauty_sequences() -> None:
    result = check(read_events(SHARED / "amazon-beauty-s3rec" / "Beauty.txt"))
    assert result.format == "sequences"
    assert result.events.height == 198_502  # PROVENANCE.md
    assert result.events[USER_ID].n_unique() == 22_363
    assert result.events[ITEM_ID].n_unique() == 12_101


@pytest.mark.realdata
@realdata
def test_real_movielens_100k() -> None:
    result = check(read_events(SHARED / "movielens-100k"))
    assert result.format == "movielens"
    assert result.events.height == 100_000
    assert result.events[USER_ID].n_unique() == 943
    assert result.events[VALUE].value_counts().sort(VALUE)["count"].to_list() == [
        6110,
        11370,
        27145,
        34174,
        21201,
    ]
    assert result.items is not None
    assert result.items.height == 1682
    first = datetime.fromtimestamp(result.events[TIMESTAMP].min() / 1000, tz=UTC)
    assert (first.year, first.month, first.day) == (1997, 9, 20)


@pytest.mark.realdata
@realdata
def test_real_retailrocket_mb() -> None:
    result = check(read_events(SHARED / "retailrocket-mb" / "events.csv"))
    assert result.events.height == 97_381
    counts = dict(result.events[BEHAVIOR].value_counts().rows())
    assert counts == {"view": 75_374, "cart": 12_456, "buy": 9_551}
    assert result.events[USER_ID].n_unique() == 2_174


@pytest.mark.realdata
@realdata
def test_real_taobao_slices() -> None:
    users = check(read_events(SHARED / "taobao-userbehavior-raw" / "userbehavior_user_slice.csv"))
    assert users.format == "taobao"
    assert (users.events.height, users.events[USER_ID].n_unique()) == (10_000, 114)
    assert users.items is not None
    assert (users.items.height, users.items["category"].n_unique()) == (7_623, 1_096)
    times = check(read_events(SHARED / "taobao-userbehavior-raw" / "userbehavior_time_slice.csv"))
    assert (times.events.height, times.events[USER_ID].n_unique()) == (96_168, 58_732)


@pytest.mark.realdata
@realdata
def test_real_otto_sample() -> None:
    result = check(read_events(SHARED / "otto-sample" / "train.jsonl"))
    assert result.format == "otto"
    assert result.events.height == 862
    assert result.events[USER_ID].n_unique() == 20
    assert result.events[ITEM_ID].n_unique() == 510
    assert dict(result.events[BEHAVIOR].value_counts().rows()) == {"clicks": 800, "carts": 52, "orders": 10}


# ----------------------------------------------------------------------------------- reading in slices


def read_in_slices(monkeypatch: pytest.MonkeyPatch, path: Path, rows: int, **kwargs) -> ReadResult:
    monkeypatch.setattr(readers_lines, "SLICE_ROWS", rows)
    return check(read_events(path, **kwargs))


def assert_same(a: ReadResult, b: ReadResult) -> None:
    assert a.events.equals(b.events)
    assert a.rejects.equals(b.rejects)
    assert a.rows_read == b.rows_read
    assert (a.items is None and b.items is None) or a.items.equals(b.items)  # type: ignore[union-attr]


def test_slices_give_the_same_events_and_rejects_as_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lines = [f"u{i % 4},i{i},{T0 + i},view,{i}" for i in range(30)]
    lines[9] = "u1,i9"  # slice 2 (rows of 7): wrong field count
    lines[11] = f'u1,"i,11",{T0},buy,1'  # quoted separator
    lines[12] = f'u1,"i12,{T0},buy,1'  # unclosed quote
    lines[16] = ""  # blank: not a row, but line numbers go on
    lines[18] = f"u2,i18,{T0},view,abc"  # bad value
    lines[23] = f"u3,i23,{T0 * 1000},view,1"  # slice 4: milliseconds in a column of seconds
    lines[25] = "u3,i25,-7,view,1"
    lines[27] = f"u3,i27,{T0},view,inf"
    path = write(tmp_path / "e.csv", "user,item,time,behavior,value\n" + "\n".join(lines) + "\n")
    whole = read_in_slices(monkeypatch, path, 1 << 20)
    for rows_per_slice in (1, 7, 29):
        assert_same(read_in_slices(monkeypatch, path, rows_per_slice), whole)
    assert whole.rejects.select(LINE, REASON).rows() == [
        (11, "expected 5 fields separated by ',', found 2"),
        (14, "malformed quoting (a quote inside an unquoted field, or an unclosed quote)"),
        (20, "value 'abc' is not a number"),
        (25, f"timestamp '{T0 * 1000}' looks like milliseconds but the column holds seconds (mixed units)"),
        (27, "timestamp '-7' is negative"),
        (29, "value 'inf' is not finite"),
    ]
    assert whole.rejects[RAW][0] == "u1,i9"
    assert whole.events.filter(pl.col(LINE) == 13)[ITEM_ID].to_list() == ["i,11"]
    assert whole.events.height == 30 - 1 - 6  # the blank line is no row


def test_the_timestamp_unit_is_decided_by_the_whole_column(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The first slice is all milliseconds, but most of the file is seconds: the first slice is the odd one.
    lines = [f"u,i{i},{(T0 + i) * 1000}" for i in range(5)] + [f"u,i{i},{T0 + i}" for i in range(5, 20)]
    path = write(tmp_path / "e.csv", "user,item,time\n" + "\n".join(lines) + "\n")
    result = read_in_slices(monkeypatch, path, 5)
    assert_same(result, read_in_slices(monkeypatch, path, 1 << 20))
    assert result.rejects[LINE].to_list() == [2, 3, 4, 5, 6]
    assert "looks like milliseconds but the column holds seconds" in result.rejects[REASON][0]


def test_slices_of_plain_integers_next_to_other_text_read_as_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Slice 1 is plain integers (held compactly), slice 2 is not: the column still reads as one.
    stamps = [str(T0 + i) for i in range(6)] + ["+5", f"00{T0}", f"{T0}.5", "nan", f" {T0}", str(T0)]
    lines = [f"u,i{i},{ts}" for i, ts in enumerate(stamps)]
    path = write(tmp_path / "e.csv", "user,item,time\n" + "\n".join(lines) + "\n")
    result = read_in_slices(monkeypatch, path, 6)
    assert_same(result, read_in_slices(monkeypatch, path, 1 << 20))
    assert result.events.filter(pl.col(LINE) == 10)[TIMESTAMP].to_list() == [T0 * 1000 + 500]
    assert result.rejects.select(LINE, REASON).rows() == [(11, "timestamp 'nan' is NaN")]


def test_taobao_items_from_slices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lines = [f"{i % 3},{i % 5},{i % 2},pv,{T0 + i}" for i in range(17)] + ["9,9,1,pv,x", "9,9"]
    path = write(tmp_path / "UserBehavior.csv", "\n".join(lines) + "\n")
    result = read_in_slices(monkeypatch, path, 4)
    assert_same(result, read_in_slices(monkeypatch, path, 1 << 20))
    assert result.items is not None
    assert result.items.rows() == [("0", "0"), ("1", "1"), ("2", "0"), ("3", "1"), ("4", "0"), ("9", "1")]
