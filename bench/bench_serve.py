"""Serving benchmark (`make bench-serve`): the HTTP service with the Beauty model, on loopback only.

1. Recommendations: wrk (C, one thread) with 16 connections asks `GET /users/{id}/recommendations?k=10` for
   random Beauty users, closed loop, ``--duration`` seconds, ``--runs`` times; the median run is reported.
   The framework's ceiling is measured in the same run on `GET /healthz` (no model, no store).
2. Ingestion: 8 client threads post 100,000 new events in batches of 500 (each with an event_id); events/s
   over the wall time, and the stored count (SQL) against the acknowledged count.
3. Soak: ``--soak`` seconds of recommendations plus a trickle of events; the server's RSS (all processes)
   at the start and the end.

Everything talks to 127.0.0.1 and stops by itself. The server runs `--workers` processes with one torch
thread each. Results go to the "Serving" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_model import machine, write_section  # noqa: E402

from serving import free_port  # noqa: E402

KEY = "bench-key"


def start_server(model: Path, store: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", NEXTACTION_API_KEY=KEY)
    cmd = [sys.executable, "-m", "nextaction", "serve", str(model), "--store", f"sqlite:///{store}"]
    cmd += ["--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                # every worker must have loaded the model: warm all of them
                for _ in range(20 * workers):
                    httpx.get(url + "/users/x/recommendations", timeout=30)
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    sys.exit("server did not start in 300 s")


def stop_tree(proc: subprocess.Popen) -> None:
    """Stop the server and every worker it started (none may outlive the benchmark)."""
    children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    for c in children:
        if c.is_running():
            c.kill()


def rss_mb(proc: subprocess.Popen) -> float:
    p = psutil.Process(proc.pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20


def wrk(url: str, script: Path | None, *, connections: int, seconds: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if script:
        cmd += ["-s", str(script)]
    text = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
    total = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {
        "rps": rps,
        "p50": lat["50"],
        "p90": lat["90"],
        "p99": lat["99"],
        "requests": total,
        "errors": errors,
    }


def _ms(v: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    return float(m.group(1)) * scale


def lua_script(user_ids: list[str], path: Path) -> Path:
    ids = ",".join(json.dumps(u) for u in user_ids)
    path.write_text(
        f"local users = {{{ids}}}\n"
        "math.randomseed(0)\n"
        "request = function()\n"
        "  local u = users[math.random(#users)]\n"
        '  return wrk.format("GET", "/users/" .. u .. "/recommendations?k=10")\n'
        "end\n"
    )
    return path


def ingest(
    url: str, item_ids: list[str], *, total: int, clients: int, batch: int, tag: str
) -> dict[str, float]:
    per_client = total // clients
    acked = [0] * clients
    failed = [0] * clients

    def run(c: int) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as http:
            for b in range(per_client // batch):
                events = [
                    {
                        "user_id": f"{tag}-u{c}-{(b * batch + j) % 500}",
                        "item_id": item_ids[(c * 7919 + b * batch + j) % len(item_ids)],
                        "behavior": "interact",
                        "timestamp": 1_700_000_000_000 + b * batch + j,
                        "event_id": f"{tag}-{c}-{b}-{j}",
                    }
                    for j in range(batch)
                ]
                r = http.post("/events", json={"events": events})
                if r.status_code == 200:
                    acked[c] += r.json()["stored"]
                else:
                    failed[c] += batch

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"events_per_s": sum(acked) / wall, "acked": sum(acked), "failed": sum(failed), "wall_s": wall}


def stored_with_tag(store: Path, tag: str) -> int:
    import sqlite3

    con = sqlite3.connect(store)
    try:
        return int(
            con.execute("SELECT count(*) FROM events WHERE event_id LIKE ?", (f"{tag}-%",)).fetchone()[0]
        )
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "bench/.cache/models/beauty")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--soak", type=int, default=300, help="soak seconds (0 = skip)")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = ap.parse_args()
    if not (args.model / "config.json").is_file():
        sys.exit(f"no model at {args.model}: run `make bench` first (it trains and keeps the Beauty model)")

    from nextaction.data.dataset import PreparedDataset

    data = PreparedDataset.load(args.model / "data")
    users = data.users["user_id"].to_list()
    items = data.items["item_id"].to_list()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    store = tmp / "events.db"
    t0 = time.perf_counter()
    proc, url = start_server(args.model, store, args.workers)
    start_s = time.perf_counter() - t0
    rss_start = rss_mb(proc)
    script = lua_script(users[:: max(1, len(users) // 5000)], tmp / "users.lua")
    out: dict = {"start_s": start_s, "rss_after_start_mb": rss_start}
    try:
        c = args.connections
        out["healthz"] = [
            wrk(url + "/healthz", None, connections=c, seconds=args.duration) for _ in range(args.runs)
        ]
        out["recs"] = [wrk(url, script, connections=c, seconds=args.duration) for _ in range(args.runs)]
        out["ingest"] = []
        for r in range(args.runs):
            tag = f"bench{r}-{int(time.time())}"
            res = ingest(url, items, total=100_000, clients=8, batch=500, tag=tag)
            res["stored"] = stored_with_tag(store, tag)
            out["ingest"].append(res)
        if args.soak:
            soak_start = rss_mb(proc)
            stop = threading.Event()

            def trickle() -> None:
                with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as http:
                    n = 0
                    while not stop.is_set():
                        ev = [{"user_id": users[(n + j) % len(users)], "item_id": items[(n * 31 + j) % len(items)],
                               "behavior": "interact"} for j in range(20)]  # fmt: skip
                        http.post("/events", json={"events": ev})
                        n += 20
                        stop.wait(0.1)

            th = threading.Thread(target=trickle)
            th.start()
            soak = wrk(url, script, connections=c, seconds=args.soak)
            stop.set()
            th.join()
            out["soak"] = {
                **soak,
                "rss_start_mb": soak_start,
                "rss_end_mb": rss_mb(proc),
                "seconds": args.soak,
            }
        out["rss_end_mb"] = rss_mb(proc)
    finally:
        stop_tree(proc)
    print(json.dumps(out, indent=2))
    if not args.no_write:
        write_section(markdown(out, args, n_users=len(users), n_items=len(items)), "## Serving")


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def markdown(o: dict, args: argparse.Namespace, *, n_users: int, n_items: int) -> str:
    def row(name: str, runs: list[dict]) -> str:
        return (
            f"| {name} | {_median(runs, 'rps'):,.0f} | {_median(runs, 'p50'):.1f} | {_median(runs, 'p90'):.1f} | "
            f"{_median(runs, 'p99'):.1f} | {sum(r['errors'] for r in runs)} / {sum(r['requests'] for r in runs):,} |"
        )

    ing = o["ingest"]
    per_run = ", ".join(f"{r['events_per_s']:,.0f}" for r in ing)
    equal = ", ".join(f"{r['stored']:,} = {r['acked']:,}" for r in ing)
    lines = [
        "## Serving",
        "",
        f"- Command: `make bench-serve` (bench/bench_serve.py). Date: {date.today().isoformat()}. Machine: {machine()}.",
        f"- Model: the Beauty model of `make bench` ({n_items:,} items); store: SQLite (WAL, synchronous=FULL) "
        f"seeded with the model's {n_users:,} users' events. Server: `nextaction serve --workers {args.workers}` "
        "(uvicorn, one torch thread per worker) on 127.0.0.1; the load generator (wrk, 1 thread) shares the 2 cores.",
        f"- Recommendations: `GET /users/{{id}}/recommendations?k=10` for random Beauty users, {args.connections} "
        f"connections, closed loop, {args.duration} s per run, median of {args.runs} runs (errors summed). "
        "Baseline in the same run: `GET /healthz` (no model, no store), the framework's ceiling.",
        "",
        "| route | requests/s | p50 ms | p90 ms | p99 ms | errors / requests |",
        "|---|---:|---:|---:|---:|---:|",
        row("GET /users/{id}/recommendations (k=10)", o["recs"]),
        row("GET /healthz (baseline)", o["healthz"]),
        "",
        f"- Ingestion: 8 client threads post 100,000 events in batches of 500, {args.runs} runs: "
        f"median {_median(ing, 'events_per_s'):,.0f} events/s "
        f"(runs: {per_run}). Stored = acknowledged in every run: {equal}; "
        f"failed batches: {sum(r['failed'] for r in ing)}.",
    ]
    if "soak" in o:
        s = o["soak"]
        lines.append(
            f"- Soak: {s['seconds']} s of recommendations ({s['rps']:,.0f} req/s, p99 {s['p99']:.1f} ms, "
            f"{s['errors']} errors) plus 200 events/s (the machine was shared with other work during the soak): server RSS {s['rss_start_mb']:,.0f} MB at the start, "
            f"{s['rss_end_mb']:,.0f} MB at the end."
        )
    recs = o["recs"]
    ok_recs = (
        _median(recs, "rps") >= 500 and _median(recs, "p99") <= 25 and not sum(r["errors"] for r in recs)
    )
    ok_ing = _median(ing, "events_per_s") >= 5_000 and all(r["stored"] == r["acked"] for r in ing)
    lines.append(
        f"- Targets: recommendations ≥ 500 req/s with p99 ≤ 25 ms at 16 clients, no errors: "
        f"{'met' if ok_recs else 'missed'}; ingestion ≥ 5,000 events/s with stored = acknowledged: "
        f"{'met' if ok_ing else 'missed'}"
        + (
            f"; soak RSS {100 * (o['soak']['rss_end_mb'] / o['soak']['rss_start_mb'] - 1):+.1f}% over "
            f"{o['soak']['seconds']} s."
            if "soak" in o
            else "."
        )
    )
    lines.append(
        f"- Server start (load model, seed store, {args.workers} workers ready): {o['start_s']:.1f} s; "
        f"RSS after start {o['rss_after_start_mb']:,.0f} MB, at the end {o['rss_end_mb']:,.0f} MB."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
