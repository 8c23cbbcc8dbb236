"""The prediction service: every route and error path through FastAPI's TestClient, plus a real uvicorn
server for durability (killed mid-ingestion) and concurrent ingestion."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from nextaction.server.app import ServeConfig, create_app
from nextaction.server.store import NewEvent, SQLiteEventStore, open_store
from serving import API_KEY, Server, sequences_model, tiny_model

AUTH = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("served-model"))


@pytest.fixture
def client(model_dir: Path, tmp_path: Path) -> TestClient:
    app = create_app(
        ServeConfig(model_dir=str(model_dir), store=f"sqlite:///{tmp_path / 'events.db'}", api_key=API_KEY)
    )
    return TestClient(app)


def post(client: TestClient, events: list[dict], **kw) -> httpx.Response:
    return client.post("/events", json={"events": events}, headers=kw.pop("headers", AUTH), **kw)


# ---- store --------------------------------------------------------------------------------------------


def test_store_orders_history_and_skips_duplicate_event_ids(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "s.db")
    r = store.add(
        [
            NewEvent("u", "b", "view", 2_000, "e2"),
            NewEvent("u", "a", "view", 1_000, "e1"),
            NewEvent("u", "c", "view", 3_000),
        ]
    )
    assert (r.stored, r.duplicates) == (3, [])
    r = store.add([NewEvent("u", "b", "view", 2_000, "e2"), NewEvent("u", "d", "buy", 4_000, "e4")])
    assert (r.stored, r.duplicates) == (1, [0])
    assert [e["item_id"] for e in store.history("u", limit=10)] == ["a", "b", "c", "d"]
    assert [e["item_id"] for e in store.history("u", limit=2)] == ["c", "d"]  # the most recent, oldest first
    assert store.count() == 4


def test_delete_leaves_no_trace_in_the_database_files(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "s.db")
    secret_user, secret_item = "erase-me-7f3a9c", "private-item-c41d"
    store.add([NewEvent(f"other{i}", f"item{i}", "view", i) for i in range(200)])
    store.add([NewEvent(secret_user, secret_item, "view", i, f"ev-{secret_user}-{i}") for i in range(50)])
    store.add([NewEvent(f"later{i}", f"item{i}", "view", i) for i in range(200)])
    reader = open_store(f"sqlite:///{tmp_path / 's.db'}")  # another connection, as another worker would hold
    assert len(reader.history(secret_user, limit=100)) == 50

    assert store.delete_user(secret_user) == 50
    assert store.history(secret_user, limit=10) == []
    assert store.count() == 400
    files = [p for p in tmp_path.iterdir() if p.name.startswith("s.db")]
    for path in files:
        raw = path.read_bytes()
        assert secret_user.encode() not in raw, path.name
        assert secret_item.encode() not in raw, path.name


def test_store_url_errors_are_clear(tmp_path: Path) -> None:
    from nextaction.errors import InputError

    with pytest.raises(InputError, match="unsupported store 'postgresql'"):
        open_store("postgresql://db/events")
    with pytest.raises(InputError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path / 'missing' / 'e.db'}")


# ---- routes -------------------------------------------------------------------------------------------


def test_healthz_and_seeded_users(client: TestClient) -> None:
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["behaviors"] == ["view", "cart", "buy"] and h["items"] == 40
    assert h["clock"] == "timestamps"  # a dataset report without "clock" (older models): timestamps
    hist = client.get("/users/u1/history?limit=5").json()
    assert hist["known_user"] and len(hist["events"]) == 5
    assert hist["clock"] == "timestamps" and all(e["time"].startswith("19") for e in hist["events"])


def test_recommendations_reflect_an_event_posted_just_before(client: TestClient) -> None:
    before = client.get("/users/fresh/recommendations?k=5").json()
    assert not before["known_user"] and "fallback" in before and len(before["items"]) == 5
    scores = [x["score"] for x in before["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0  # popular items, not arbitrary ties
    r = post(client, [{"user_id": "fresh", "item_id": "i7", "behavior": "view", "timestamp": 1_000}])
    assert r.status_code == 200 and r.json()["stored"] == 1
    after = client.get("/users/fresh/recommendations?k=5").json()
    assert after["known_user"] and after["history_length"] == 1
    assert [x["item_id"] for x in after["items"]] != [x["item_id"] for x in before["items"]]


def test_recommendations_for_a_behavior_and_unknown_behavior(client: TestClient) -> None:
    r = client.get("/users/u1/recommendations?k=3&behavior=buy").json()
    assert len(r["items"]) == 3
    # each score is the calibrated P(buy) that /predict serves for the same user and item
    p = client.post("/predict", json={"user_id": "u1", "items": [x["item_id"] for x in r["items"]]}).json()
    assert [round(x["score"], 5) for x in r["items"]] == [
        round(p["predictions"][x["item_id"]]["buy"], 5) for x in r["items"]
    ]
    bad = client.get("/users/u1/recommendations?behavior=like")
    assert bad.status_code == 400 and "view, cart, buy" in bad.json()["error"]


def test_adhoc_recommendations_and_predict(client: TestClient) -> None:
    r = client.post(
        "/recommendations", json={"history": ["i3", {"item_id": "i4", "behavior": "cart"}, "nope"], "k": 4}
    )
    body = r.json()
    assert r.status_code == 200 and len(body["items"]) == 4 and body["unknown_items"] == ["nope"]
    p = client.post("/predict", json={"user_id": "u1", "items": ["i3", "i4", "missing"]}).json()
    assert p["behaviors"] == ["view", "cart", "buy"]
    assert p["predictions"]["missing"] is None and p["unknown_items"] == ["missing"]
    # the ad-hoc history route answers what the stored user's route answers for the same events
    history = client.get("/users/u1/history?limit=1000").json()["events"]
    adhoc = client.post("/predict", json={"history": history, "items": ["i3"]}).json()
    assert adhoc["predictions"]["i3"] == pytest.approx(p["predictions"]["i3"])
    q = client.post("/predict", json={"history": [{"item_id": "i3", "behavior": "cart"}], "items": ["i3"]})
    assert q.status_code == 200 and q.json()["history_length"] == 1
    both = client.post("/predict", json={"user_id": "u1", "history": [], "items": ["i3"]})
    assert both.status_code == 422 and "not both" in both.json()["error"]


def test_events_report_rejections_duplicates_and_unknown_items(client: TestClient) -> None:
    events = [
        {"user_id": "a", "item_id": "i1", "behavior": "view", "event_id": "x1"},
        {"user_id": "a", "item_id": "brand-new", "behavior": "view"},
        {"user_id": "a", "item_id": "i2", "behavior": "like"},
        {"user_id": 42, "item_id": 7, "behavior": "buy"},  # numeric ids are stored as strings
    ]
    body = post(client, events).json()
    assert body["stored"] == 3 and body["unknown_items"] == 2  # "brand-new" and "7"
    assert [r["index"] for r in body["rejected"]] == [2] and "unknown behavior 'like'" in body["rejected"][0][
        "reason"
    ]
    again = post(client, events[:1]).json()
    assert again["stored"] == 0 and again["duplicates"] == [0]
    assert client.get("/users/42/history").json()["events"][0]["item_id"] == "7"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"events": [{"user_id": "a", "item_id": "i1", "colour": "red"}]}, "events[0].colour"),
        ({"events": [{"user_id": "a"}]}, "events[0].item_id"),
        ({"events": [{"user_id": "a", "item_id": "i1", "timestamp": "yesterday"}]}, "events[0].timestamp"),
        ({"events": [{"user_id": "a", "item_id": "i1", "timestamp": -5}]}, "events[0].timestamp"),
        ({"events": "nope"}, "events"),
        ({}, "events"),
    ],
)
def test_malformed_batches_name_the_field_and_store_nothing(
    client: TestClient, payload: dict, field: str
) -> None:
    n = client.app.state.store.count()
    r = client.post("/events", json=payload, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"].startswith(field)
    assert client.app.state.store.count() == n


def test_malformed_json_and_oversized_batches(client: TestClient) -> None:
    r = client.post("/events", content=b"{not json", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    n = client.app.state.store.count()
    big = [{"user_id": "b", "item_id": "i1", "behavior": "view"}] * 10_001
    r = post(client, big)
    assert r.status_code == 413 and "10000" in r.json()["error"]
    assert client.app.state.store.count() == n


def test_limits_on_k_and_unknown_items(client: TestClient) -> None:
    for bad in ("-1", "0", "100000"):
        r = client.get(f"/users/u1/recommendations?k={bad}")
        assert r.status_code == 422 and r.json()["error"].startswith("k:")
    assert client.get("/users/u1/recommendations?k=ten").status_code == 422
    assert client.get("/items/nope/similar").status_code == 404


def test_similar_items(client: TestClient) -> None:
    r = client.get("/items/i3/similar?k=5").json()
    assert len(r["items"]) == 5 and "i3" not in [x["item_id"] for x in r["items"]]


def test_explanations_route(client: TestClient) -> None:
    rec = client.get("/users/u1/recommendations?k=1").json()["items"][0]["item_id"]
    r = client.get(f"/users/u1/explanations?item={rec}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == "u1" and body["contributions"] and body["sentence"]
    assert client.get("/users/u1/explanations?item=nope").status_code == 404
    assert client.get("/users/u1/explanations").status_code == 422


def test_write_delete_and_admin_routes_need_the_key(client: TestClient) -> None:
    ev = [{"user_id": "k", "item_id": "i1", "behavior": "view"}]
    assert post(client, ev, headers={}).status_code == 401
    assert post(client, ev, headers={"X-API-Key": "wrong"}).status_code == 401
    assert post(client, ev, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert client.delete("/users/k").status_code == 401
    assert client.post("/admin/reload").status_code == 401


def test_delete_user_makes_them_unknown(client: TestClient) -> None:
    post(
        client,
        [{"user_id": "gone", "item_id": f"i{i}", "behavior": "view", "timestamp": i} for i in range(1, 6)],
    )
    assert client.get("/users/gone/recommendations").json()["known_user"]
    r = client.delete("/users/gone", headers=AUTH).json()
    assert r["deleted_events"] == 5
    assert not client.get("/users/gone/recommendations").json()["known_user"]
    assert client.get("/users/gone/history").json()["events"] == []


def test_reload_swaps_the_model(client: TestClient, model_dir: Path, tmp_path: Path) -> None:
    before = client.get("/users/u1/recommendations?k=5").json()["items"]
    r = client.post("/admin/reload", headers=AUTH, json={"model_dir": str(model_dir)})
    assert r.status_code == 200 and r.json()["generation"] == 1
    assert client.get("/users/u1/recommendations?k=5").json()["items"] == before
    bad = client.post("/admin/reload", headers=AUTH, json={"model_dir": str(tmp_path / "nowhere")})
    assert bad.status_code == 400
    assert client.get("/healthz").json()["model_generation"] == 1  # the old model still serves


def test_healthz_names_the_model_by_name_and_hash_never_its_path(
    client: TestClient, model_dir: Path, tmp_path: Path
) -> None:
    """/healthz is readable without a key: it shows the model directory's base name and a content hash."""

    def model_info() -> dict:
        r = client.get("/healthz")
        for path in (str(model_dir), str(model_dir.resolve()), str(tmp_path), str(tmp_path.resolve())):
            assert path not in r.text
        assert "model_dir" not in r.json()
        return r.json()["model"]

    first = model_info()
    assert first["name"] == model_dir.name and re.fullmatch(r"[0-9a-f]{12}", first["hash"])
    copy = shutil.copytree(model_dir, tmp_path / "same-model")  # the same content: the same hash
    assert client.post("/admin/reload", headers=AUTH, json={"model_dir": str(copy)}).status_code == 200
    assert model_info() == {"name": "same-model", "hash": first["hash"]}
    other = tiny_model(tmp_path / "other-model", epochs=1)  # another model: another hash
    r = client.post("/admin/reload", headers=AUTH, json={"model_dir": str(other)})
    assert r.status_code == 200 and r.json()["model_dir"] == str(other)  # the admin may see the path
    second = model_info()
    assert second["name"] == "other-model" and re.fullmatch(r"[0-9a-f]{12}", second["hash"])
    assert second["hash"] != first["hash"]


def test_history_of_a_log_without_clock_counts_positions(tmp_path: Path) -> None:
    """A ``sequences`` log only orders events: the history says so (``clock``) and numbers the events
    instead of giving them 1970 dates; a timestamped model's history keeps its times."""
    model = sequences_model(tmp_path)
    app = create_app(
        ServeConfig(model_dir=str(model), store=f"sqlite:///{tmp_path / 'events.db'}", api_key=API_KEY)
    )
    client = TestClient(app)
    assert client.get("/healthz").json()["clock"] == "positions"
    h = client.get("/users/u3/history?limit=3").json()  # u3 has 8 events: the last three are #6, #7, #8
    assert h["clock"] == "positions"
    assert [(e["position"], e["item_id"]) for e in h["events"]] == [(6, "s8"), (7, "s9"), (8, "s10")]
    assert all("time" not in e for e in h["events"])
    full = client.get("/users/u3/history").json()["events"]
    assert [e["position"] for e in full] == list(range(1, 9))
    # the events of the history route can be posted back as a history
    r = client.post("/recommendations", json={"history": full, "k": 3})
    assert r.status_code == 200 and r.json()["history_length"] == 8


def test_metrics_in_prometheus_format(client: TestClient) -> None:
    client.get("/users/u1/recommendations")
    text = client.get("/metrics").text
    assert (
        'nextaction_requests_total{method="GET",route="/users/{user_id}/recommendations",status="200"}'
        in text
    )
    assert "nextaction_request_seconds_bucket" in text
    assert "nextaction_events_stored " in text


def test_openapi_docs_and_page(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/users/{user_id}/recommendations" in spec["paths"]
    assert "<!doctype html" in client.get("/").text.lower()


# ---- a real server ------------------------------------------------------------------------------------


def test_acknowledged_events_survive_a_killed_server(model_dir: Path, tmp_path: Path) -> None:
    """Post batches from 4 threads, SIGKILL the server mid-stream, restart: every acknowledged event is there."""
    store = tmp_path / "events.db"
    server = Server(model_dir, store)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as http:
            for b in range(10_000):
                if stop.is_set():
                    return
                ids = [f"c{c}-b{b}-{j}" for j in range(50)]
                events = [
                    {"user_id": f"w{c}", "item_id": "i1", "behavior": "view", "event_id": e} for e in ids
                ]
                try:
                    r = http.post("/events", json={"events": events})
                except httpx.HTTPError:
                    return  # the server died under us: this batch was never acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.extend(ids)

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    while len(acked) < 2_000:
        threading.Event().wait(0.02)
    server.stop(hard=True)
    stop.set()
    for t in threads:
        t.join()

    server = Server(model_dir, store)
    try:
        con = open_store(f"sqlite:///{store}")._con()
        stored = {r[0] for r in con.execute("SELECT event_id FROM events WHERE event_id IS NOT NULL")}
        assert set(acked) <= stored
        assert len(stored) - len(acked) <= 4 * 50  # at most the batches in flight when it died
        # re-posting acknowledged events is a no-op
        r = httpx.post(
            server.url + "/events",
            json={"events": [{"user_id": "w0", "item_id": "i1", "behavior": "view", "event_id": acked[0]}]},
            headers=AUTH,
        ).json()
        assert r["stored"] == 0 and r["duplicates"] == [0]
    finally:
        server.stop()


def test_serve_command_bad_input_is_one_line_exit_2(model_dir: Path, tmp_path: Path, capsys) -> None:
    from test_cli import run

    code, _, err = run(["serve", str(tmp_path / "no-model"), "--api-key", "k"], capsys)
    assert code == 2 and "not a trained model directory" in err and "Traceback" not in err
    code, _, err = run(["serve", str(model_dir), "--store", "postgresql://db/x", "--api-key", "k"], capsys)
    assert code == 2 and "unsupported store 'postgresql'" in err
    code, _, err = run(["serve", str(model_dir), "--workers", "0", "--api-key", "k"], capsys)
    assert code == 2 and "--workers" in err


def test_two_workers_share_reloads_and_metrics_and_drop_no_request(model_dir: Path, tmp_path: Path) -> None:
    """`--workers 2`: a reload reaches both workers, no request fails meanwhile, /metrics sums workers."""
    server = Server(model_dir, tmp_path / "events.db", workers=2)
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                statuses.append(http.get("/users/u1/recommendations").status_code)

    try:
        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        r = httpx.post(server.url + "/admin/reload", headers=AUTH, timeout=30)
        assert r.status_code == 200 and r.json()["generation"] == 1
        threading.Event().wait(1.5)  # the other worker looks for a reload at most once a second
        stop.set()
        for t in threads:
            t.join()
        assert statuses and set(statuses) == {200}
        gens = {httpx.get(server.url + "/healthz").json()["model_generation"] for _ in range(20)}
        assert gens == {1}
        text = httpx.get(server.url + "/metrics").text
        line = next(
            x
            for x in text.splitlines()
            if x.startswith('nextaction_requests_total{method="GET",route="/users/{user_id}/rec')
        )
        assert float(line.split()[-1]) == len(statuses)
    finally:
        stop.set()
        server.stop()
