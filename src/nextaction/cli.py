"""The ``nextaction`` command line. Each command parses options, calls one library function, prints.

Exit codes: 0 ok, 2 bad input (one line on stderr, no traceback), 1 internal error (a bug: please report).
Set NEXTACTION_DEBUG=1 to see the traceback of an internal error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nextaction.errors import InputError

app = typer.Typer(
    help="nextaction: predict what users do next, from event log to served prediction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Public datasets: list and download.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
items_app = typer.Typer(
    help="The catalogue of a trained model: add new items by their text.", no_args_is_help=True
)
app.add_typer(items_app, name="items")
federated_app = typer.Typer(
    help="Federated training with Flower: clients train on their own users' events and send only weights.",
    no_args_is_help=True,
)
app.add_typer(federated_app, name="federated")

out = Console()
err = Console(stderr=True)

FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="csv, tsv, parquet, jsonl, sequences, movielens, retailrocket, taobao, "
        "otto (detected when left out)",
    ),
]
MapOpt = Annotated[
    str | None,
    typer.Option("--map", help="column mapping, e.g. user=visitorid,item=itemid,time=ts,behavior=event"),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config value: section.key=value (repeatable)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]


def parse_mapping(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    mapping: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--map expects key=column pairs like user=visitorid,item=itemid; got {part!r}")
        mapping[key.strip()] = value.strip()
    return mapping


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ---- prepare -----------------------------------------------------------------------------------------


@app.command()
def prepare(
    events: Annotated[str, typer.Argument(help="event log: file, or folder for --format movielens")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output dataset directory")],
    items: Annotated[
        str | None, typer.Option("--items", help="item table (CSV/TSV/Parquet keyed by item_id)")
    ] = None,
    format: FormatOpt = None,
    map: MapOpt = None,
    sep: Annotated[str | None, typer.Option("--sep", help="field separator for delimited text")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file with a \\[prepare] table")
    ] = None,
    set_: SetOpt = None,
    split: Annotated[
        str | None, typer.Option("--split", help="auto, leave_one_out, temporal or none")
    ] = None,
    target_behavior: Annotated[str | None, typer.Option("--target-behavior", help="e.g. buy")] = None,
    min_user_events: Annotated[int | None, typer.Option(help="iterative k-core: min events per user")] = None,
    min_item_events: Annotated[int | None, typer.Option(help="iterative k-core: min events per item")] = None,
    max_seq_len: Annotated[int | None, typer.Option(help="keep each user's most recent N events")] = None,
    dedup_window: Annotated[
        float | None, typer.Option(help="drop repeats of (user,item,behavior) within N s")
    ] = None,
    keep_behaviors: Annotated[str | None, typer.Option(help="whitelist, e.g. view,cart,buy")] = None,
    rename: Annotated[
        str | None, typer.Option(help="behaviour renames, e.g. addtocart=cart,transaction=buy")
    ] = None,
    value_rule: Annotated[
        str | None, typer.Option(help="value to behaviour, e.g. 'value>=4:like,else:watch'")
    ] = None,
    pseudonymize: Annotated[bool, typer.Option(help="HMAC user ids (key from NEXTACTION_HMAC_KEY)")] = False,
    strict: Annotated[bool, typer.Option(help="any rejected row is an error (exit 2)")] = False,
    json_: JsonOpt = False,
) -> None:
    """Read, clean, index and split an event log into a prepared dataset directory."""
    from nextaction.config import load_sections
    from nextaction.data.prepare import report_table
    from nextaction.data.prepare_config import PrepareConfig
    from nextaction.workflow import prepare_source

    opts = load_sections(config, set_ or [], sections=("prepare",))["prepare"]
    flags: dict[str, dict[str, Any]] = {
        "split": {"kind": split, "target_behavior": target_behavior},
        "filters": {
            "min_user_events": min_user_events,
            "min_item_events": min_item_events,
            "max_seq_len": max_seq_len,
        },
        "dedup": {"window_seconds": dedup_window},
        "behaviors": {
            "keep": keep_behaviors.split(",") if keep_behaviors else None,
            "aliases": parse_mapping(rename),
            "value_rule": value_rule,
        },
        "pseudonymize": {"enabled": True} if pseudonymize else {},
    }
    for section, values in flags.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            opts.setdefault(section, {}).update(given)
    if strict:
        opts["strict"] = True
    cfg = PrepareConfig.from_dict(opts)
    with err.status("preparing …") as status:
        result = prepare_source(
            events,
            format=format,
            mapping=parse_mapping(map),
            separator=sep,
            items=items,
            config=cfg,
            progress=lambda msg: status.update(msg),
        )
        result.dataset.save(out_dir, rejects=result.rejects)
    if json_:
        _print_json(result.dataset.report)
        return
    out.print(report_table(result.dataset.report))
    out.print(f"[green]wrote[/green] {out_dir} (report.json, rejects.csv, events.parquet, seq_*.npy)")


# ---- datasets ----------------------------------------------------------------------------------------


@datasets_app.command("list")
def datasets_list() -> None:
    """List the datasets `nextaction datasets download` knows."""
    from nextaction.data.download import DATASETS

    table = Table("name", "format", "url")
    for name, spec in DATASETS.items():
        table.add_row(name, getattr(spec, "format", ""), getattr(spec, "url", ""))
    out.print(table)


@datasets_app.command("download")
def datasets_download(
    name: Annotated[str, typer.Argument(help="dataset name (see `nextaction datasets list`)")],
    cache_dir: Annotated[Path | None, typer.Option(help="cache folder (default ~/.cache/nextaction)")] = None,
) -> None:
    """Download a public dataset into the cache (checksummed) and print its path."""
    from nextaction.data.download import download

    path = download(name, cache_dir=cache_dir)
    out.print(str(path))


# ---- train / evaluate / recommend --------------------------------------------------------------------


@app.command()
def train(
    source: Annotated[str, typer.Argument(help="raw event log or a prepared dataset directory")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="model directory to write")],
    format: FormatOpt = None,
    map: MapOpt = None,
    items: Annotated[str | None, typer.Option("--items", help="item table")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML with \\[model], \\[train], \\[prepare]")
    ] = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run in --out")] = False,
    holdout_items: Annotated[
        float | None,
        typer.Option(
            "--holdout-items", help="cold-start protocol: remove this fraction of items from training"
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option("--init-from", help="warm start: continue this trained model on the (grown) log"),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Train the next-action transformer; keeps the best checkpoint by validation NDCG@10.

    With --items, item text (all-MiniLM-L6-v2 by default, \\[text] settings) is fused into the items.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from nextaction.training.distributed import is_main
    from nextaction.workflow import train_model

    with Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[eps]:,.0f} events/s"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not is_main(),  # under torchrun only rank 0 reports
    ) as bar:
        task = bar.add_task("train", total=1, epoch=1, loss=0.0, eps=0.0)
        state = {"epoch": 1}

        def on_step(i: int, n: int, loss: float, eps: float) -> None:
            bar.update(task, completed=i, total=n, epoch=state["epoch"], loss=loss, eps=eps)

        def on_epoch(rec: dict[str, Any]) -> None:
            state["epoch"] = rec["epoch"] + 1
            valid = f"  valid NDCG@10 {rec['valid_NDCG@10']:.4f}" if "valid_NDCG@10" in rec else ""
            valid += f"  behaviour AUC {rec['valid_AUC']:.4f}" if "valid_AUC" in rec else ""
            err.print(
                f"epoch {rec['epoch']:>3}  loss {rec['loss']:.4f}  {rec['epoch_s']:.1f}s  "
                f"{rec['events_per_s']:,} events/s{valid}"
            )

        result = train_model(
            source,
            out_dir,
            format=format,
            mapping=parse_mapping(map),
            items=items,
            config_path=config,
            sets=set_ or [],
            resume=resume,
            holdout_items=holdout_items,
            init_from=init_from,
            log=err.print,
            on_epoch=on_epoch,
            progress=on_step,
        )
    if not is_main():
        return
    if json_:
        _print_json(result)
    else:
        _metrics_table(result, title=f"test metrics ({out_dir})")


def _outcome_table(o: dict[str, Any]) -> None:
    """P(behaviour | the next event's item): AUC per behaviour with its 95% interval, accuracy, log loss."""
    first = o["nextaction"]
    names = list(first.get("auc", {}))
    table = Table(title=f"next-event behaviour given its item ({first['events']} events)")
    table.add_column("model")
    for b in names:
        table.add_column(f"AUC {b}", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("log loss", justify="right")
    for name, m in {"nextaction": first, **o.get("baselines", {})}.items():
        ci = m.get("auc_ci95", {})
        cells = [
            "—"
            if m["auc"][b] is None
            else f"{m['auc'][b]:.4f}" + (f" [{ci[b][0]:.4f}, {ci[b][1]:.4f}]" if b in ci else "")
            for b in names
        ]
        table.add_row(name, *cells, f"{m['accuracy']:.4f}", f"{m['log_loss']:.4f}")
    out.print(table)
    out.print(f"protocol: {o['protocol']}")


def _metrics_table(result: dict[str, Any], *, title: str) -> None:
    if result.get("outcome"):
        _outcome_table(result["outcome"])
    if not result["protocol"]["users_evaluated"] and result.get("outcome"):
        out.print("next-item ranking: no test target has a history under this split (it tests whole users)")
        return
    table = Table(title=title)
    rows = {"nextaction": result["metrics"], **result.get("baselines", {})}
    keys = ["HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20", "coverage@10"]
    table.add_column("model")
    for k in keys:
        table.add_column(k, justify="right")
    for name, m in rows.items():
        table.add_row(name, *(f"{m.get(k, float('nan')):.4f}" for k in keys))
    out.print(table)
    p = result["protocol"]
    out.print(
        f"protocol: {p['split']} split ({p['split_kind']}), {p['candidates']}, exclude_seen="
        f"{p['exclude_seen']}, ties {p['ties']}, {p['users_evaluated']} users, data {p['dataset_fingerprint']}"
    )
    windows = result.get("behaviors", {}).get("windows")
    if windows:
        _windows_table(windows)


def _windows_table(w: dict[str, Any]) -> None:
    """Pooled rolling-window figures, with 95% bootstrap intervals, one row per scorer."""
    table = Table(title=f"{w['k']} rolling test windows, pooled (95% bootstrap CI over users)")
    first = next(iter(w["pooled"].values()))
    cols = [(section, metric) for section, m in first.items() for metric in m if f"{metric}_ci" in m]
    table.add_column("model")
    for section, metric in cols:
        table.add_column(f"{section} {metric}", justify="right")
    for name, m in w["pooled"].items():
        cells = [f"{m[s][k]:.4f} [{m[s][k + '_ci'][0]:.4f}, {m[s][k + '_ci'][1]:.4f}]" for s, k in cols]
        table.add_row(name, *cells)
    out.print(table)
    out.print("windows: " + ", ".join(w["protocol"]["windows"]))


def _leave_one_out_table(loo: dict[str, Any]) -> None:
    """Leave-one-out targets: full-catalogue and sampled-negatives figures side by side, one row per scorer."""
    p = loo["protocol"]
    n = p["negatives"]
    table = Table(title=f"leave-one-out next-{p['target_behavior']} ({p['targets']})")
    cols = [("full", k) for k in ("HR@10", "NDCG@10", "MRR")]
    cols += [(f"sampled_{n}", k) for k in ("HR@10", "NDCG@10")]
    table.add_column("model", no_wrap=True)
    for section, k in cols:
        table.add_column(k if section == "full" else f"{k} 1+{n}", justify="right")
    for name, m in {"nextaction": loo, **loo.get("baselines", {})}.items():
        table.add_row(name, *(f"{m[section][k]:.4f}" for section, k in cols))
    out.print(table)
    skipped = ", ".join(f"{count} {reason}" for reason, count in loo["skipped"].items() if count) or "none"
    out.print(
        f"leave-one-out: {loo['users']} users (rows skipped: {skipped}); HR, NDCG, MRR over every catalogue "
        f"item, history kept; 1+{n}: the target among {n} sampled items the user never touched (seed "
        f"{p['negatives_seed']}); ties {p['ties']}"
    )


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="trained model directory")],
    split: Annotated[str, typer.Option(help="test or valid")] = "test",
    baselines: Annotated[bool, typer.Option(help="also evaluate the baselines with the same code")] = False,
    exclude_seen: Annotated[
        bool | None,
        typer.Option(
            help="remove every history item from the candidates, a repeated target too (a miss, as served); "
            "--no-exclude-seen keeps them (repeats count). Default: the model's (on for single-behaviour logs)"
        ),
    ] = None,
    users: Annotated[
        int, typer.Option(help="evaluate a fixed random sample of this many users (0 = all), for huge logs")
    ] = 0,
    windows: Annotated[
        int,
        typer.Option(
            help="behaviour models: also measure K consecutive test windows after the one training run "
            "(rolling origin; histories and item counts as of each window's start), pooled with bootstrap CIs"
        ),
    ] = 0,
    targets: Annotated[
        Path | None,
        typer.Option(
            help="leave-one-out targets CSV (user_id,item_id): rank each user's held-out item over the whole "
            "catalogue from their full history, and among 99 sampled negatives"
        ),
    ] = None,
    routing: Annotated[
        str | None,
        typer.Option(
            help="also rank users per test-window item for this behaviour (question routing: who will answer?)"
        ),
    ] = None,
    owner_behavior: Annotated[
        str | None,
        typer.Option(help="with --routing: the behaviour that makes a user the item's owner (e.g. ask)"),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Full-ranking evaluation (HR, NDCG, MRR, Recall @5/10/20, coverage) with the protocol recorded."""
    from nextaction.workflow import evaluate_dir

    result = evaluate_dir(
        model_dir,
        split=split,
        baselines=baselines,
        exclude_seen=exclude_seen,
        max_users=users,
        windows=windows,
        targets=targets,
        routing=routing,
        owner_behavior=owner_behavior,
    )
    if json_:
        _print_json(result)
    else:
        _metrics_table(result, title=f"{split} metrics ({model_dir})")
        if "leave_one_out" in result:
            _leave_one_out_table(result["leave_one_out"])


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="trained model directory")],
    user: Annotated[str | None, typer.Option("--user", help="user id from the training data")] = None,
    k: Annotated[int, typer.Option("--k", help="how many items")] = 10,
    split: Annotated[str, typer.Option(help="history up to this split's target: test, valid or all")] = "all",
    behavior: Annotated[
        str | None, typer.Option("--behavior", help="items the user will do this on next, e.g. buy")
    ] = None,
    outcome: Annotated[
        bool, typer.Option("--outcome", help="beside each item: P(each behaviour | it is the next event)")
    ] = False,
    all_users: Annotated[
        bool, typer.Option("--all-users", help="every user of the model's data, into --out (Parquet)")
    ] = False,
    users: Annotated[
        Path | None,
        typer.Option("--users", help="file of user ids (one a line, or a user_id column) → --out"),
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", "-o", help="Parquet file for --all-users/--users")
    ] = None,
    exclude_seen: Annotated[
        bool | None,
        typer.Option(
            "--exclude-seen/--keep-seen", help="batch: drop items the user has seen (default: the model's)"
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Top-k next items for a known user, from their history (optionally for one behaviour).

    With --outcome each item also gets the probability of each behaviour if the user's next event is on it:
    for exercises, which problem a student will attempt next and P(correct) on it. With --all-users or
    --users FILE: every such user's top-k into one Parquet file (user_id, rank, item_id, score, title)."""
    from nextaction.predictor import Predictor

    if all_users or users is not None:
        _recommend_batch(model_dir, k, all_users, users, out_path, behavior, exclude_seen, json_)
        return
    if user is None:
        raise InputError("give --user ID, or --all-users / --users FILE with --out recs.parquet")
    p = Predictor.load(model_dir)
    history = p.history(user, split=split)
    items = p.item_entries(p.recommend(history, k=k, behavior=behavior))
    if outcome:
        given = p.outcome(history, [e["item_id"] for e in items])
        for e in items:
            e["outcome"] = given[e["item_id"]]
    if json_:
        _print_json({"user": user, "items": items})
        return
    what = f"items user {user} will {behavior} next" if behavior else f"next items for user {user}"
    with_titles = any("title" in e for e in items)  # a catalogue without titles gets no empty column
    score_name = f"P({behavior})" if behavior else "score"
    given_names = [f"P({b} | next)" for b in p.behaviors] if outcome else []
    table = Table(
        "rank", "item_id", *(["title"] if with_titles else []), score_name, *given_names, title=what
    )
    for r, e in enumerate(items, 1):
        name = [e.get("title", "")] if with_titles else []
        cells = [f"{e['outcome'][b]:.3f}" for b in p.behaviors] if outcome and e.get("outcome") else []
        table.add_row(str(r), e["item_id"], *name, f"{e['score']:.3f}", *cells)
    out.print(table)


def _recommend_batch(
    model_dir: Path,
    k: int,
    all_users: bool,
    users: Path | None,
    out_path: Path | None,
    behavior: str | None,
    exclude_seen: bool | None,
    json_: bool,
) -> None:
    import time

    import polars as pl
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from nextaction.batch import read_user_list, write_parquet_atomic
    from nextaction.predictor import Predictor

    if all_users and users is not None:
        raise InputError("give either --all-users or --users FILE, not both")
    if out_path is None:
        raise InputError("batch scoring writes a file: add --out recs.parquet")
    wanted = None if users is None else read_user_list(users)
    p = Predictor.load(model_dir)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("scoring users"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("users", total=None)
        frame = p.recommend_all(
            k,
            users=wanted,
            behavior=behavior,
            exclude_seen=exclude_seen,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    seconds = time.perf_counter() - t0
    write_parquet_atomic(frame, out_path)
    summary = {
        "out": str(out_path),
        "users": frame["user_id"].n_unique(),
        "rows": frame.height,
        "unknown_users": len(p.last_unknown),
        "seconds": round(seconds, 2),
    }
    if p.last_unknown:
        rejects = out_path.with_name(out_path.stem + ".unknown_users.csv")
        pl.DataFrame({"user_id": p.last_unknown, "reason": "unknown user"}).write_csv(rejects)
        summary["unknown_users_file"] = str(rejects)
    if json_:
        _print_json(summary)
        return
    out.print(
        f"[green]wrote[/green] {out_path}: top-{k} for {summary['users']:,} users ({summary['rows']:,} rows) "
        f"in {seconds:.1f} s"
        + (
            f"; {len(p.last_unknown)} unknown users listed in {summary['unknown_users_file']}"
            if p.last_unknown
            else ""
        )
    )


@app.command()
def route(
    model_dir: Annotated[Path, typer.Argument(help="trained model directory")],
    item: Annotated[str, typer.Option("--item", help="item id, e.g. a question thread")],
    behavior: Annotated[str, typer.Option("--behavior", help="the behaviour to route for, e.g. answer")],
    k: Annotated[int, typer.Option("--k", help="how many users")] = 10,
    exclude: Annotated[str, typer.Option("--exclude", help="user ids to leave out (e.g. the asker)")] = "",
    json_: JsonOpt = False,
) -> None:
    """The users most likely to do a behaviour on an item (question routing: who will answer this thread?)."""
    from nextaction.predictor import Predictor

    p = Predictor.load(model_dir)
    left_out = [u.strip() for u in exclude.split(",") if u.strip()]
    ranked = p.route(item, behavior=behavior, k=k, exclude=left_out)
    if json_:
        _print_json(
            {"item": item, "behavior": behavior, "users": [{"user_id": u, "p": q} for u, q in ranked]}
        )
        return
    table = Table("rank", "user_id", f"P({behavior})", title=f"users most likely to {behavior} item {item}")
    for r, (u, q) in enumerate(ranked, 1):
        table.add_row(str(r), u, f"{q:.3f}")
    out.print(table)


@app.command()
def audit(
    model_dir: Annotated[Path, typer.Argument(help="trained model directory (with held-out users)")],
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="a model trained on the same data with more users held out: adds the calibrated attack",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Membership inference on users: can the model tell the people it was trained on from others?"""
    from nextaction.privacy.audit import audit_dir

    result = audit_dir(model_dir, reference=reference)
    if json_:
        _print_json(result)
        return
    table = Table("attack", "AUC", "95% CI", "TPR @ 1% FPR", title=f"membership inference on {model_dir}")
    for name, a in result["attacks"].items():
        table.add_row(name, f"{a['auc']:.4f}", str(a["auc_ci95"]), f"{a['tpr_at_1pct_fpr']:.3f}")
    out.print(table)
    if privacy := result.get("privacy"):
        out.print(f"trained with user-level DP: ε = {privacy['epsilon']:.3g}, δ = {privacy['delta']:.3g}")
    out.print(f"protocol: {result['protocol']}")


@app.command()
def history(
    model_dir: Annotated[Path, typer.Argument(help="trained model directory")],
    user: Annotated[str, typer.Option("--user", help="user id from the training data")],
    split: Annotated[str, typer.Option(help="events before this split's target: test, valid or all")] = "all",
    limit: Annotated[int, typer.Option("--limit", help="show the user's last N events")] = 50,
    json_: JsonOpt = False,
) -> None:
    """A user's known events, oldest first: times (or positions, for logs without a clock) and titles."""
    from nextaction.predictor import Predictor

    h = Predictor.load(model_dir).user_history(user, split=split, limit=limit)
    if json_:
        _print_json(h)
        return
    events = h["events"]
    positions = h["clock"] == "positions"  # an order-only log (sequences): no dates to show
    with_titles = any("title" in e for e in events)
    columns = ["#", *([] if positions else ["time (UTC)"]), "item_id", *(["title"] if with_titles else [])]
    note = "# = position: the log records the order of events, not their time" if positions else None
    table = Table(*columns, "behavior", title=f"history of user {user}", caption=note)
    for e in events:
        time = [] if positions else [(e.get("time") or "").replace("+00:00", "")]
        name = [e.get("title", "")] if with_titles else []
        table.add_row(str(e["position"]), *time, e["item_id"], *name, e["behavior"] or "")
    out.print(table)


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="trained model directory")],
    user: Annotated[
        str | None, typer.Option("--user", help="user id; unknown users get an empty history")
    ] = None,
    items: Annotated[str | None, typer.Option("--items", help="candidate item ids, comma-separated")] = None,
    next_: Annotated[
        bool,
        typer.Option(
            "--next", help="P(each behaviour | the next event is on the item): e.g. P(correct) on an exercise"
        ),
    ] = False,
    pairs: Annotated[
        Path | None, typer.Option("--pairs", help="CSV/Parquet of user_id,item_id rows, scored into --out")
    ] = None,
    out_path: Annotated[Path | None, typer.Option("--out", "-o", help="Parquet file for --pairs")] = None,
    json_: JsonOpt = False,
) -> None:
    """Probability of each behaviour (view, cart, buy …) of the user on each candidate item.

    By default: what the user will do on the item within the next events. With --next: which behaviour the
    next event will be if it is on the item (the probabilities of an item sum to 1). With --pairs FILE: every
    (user_id, item_id) row of the file, into --out (Parquet: user_id, item_id, one column per behaviour,
    note)."""
    from nextaction.predictor import Predictor

    if pairs is not None:
        from nextaction.batch import predict_pairs, read_pairs, write_parquet_atomic

        if out_path is None:
            raise InputError("--pairs writes a file: add --out probs.parquet")
        table_in = read_pairs(pairs)
        frame = predict_pairs(Predictor.load(model_dir), table_in, next_event=next_)
        write_parquet_atomic(frame, out_path)
        notes = frame["note"].value_counts().drop_nulls().rows()
        summary = {"out": str(out_path), "rows": frame.height, "notes": {n: c for n, c in notes}}
        if json_:
            _print_json(summary)
        else:
            out.print(
                f"[green]wrote[/green] {out_path}: {frame.height:,} rows; notes {summary['notes'] or 'none'}"
            )
        return
    if user is None or items is None:
        raise InputError("give --user ID --items i1,i2 (or --pairs FILE --out probs.parquet)")
    p = Predictor.load(model_dir)
    candidates = [i.strip() for i in items.split(",") if i.strip()]
    if not candidates:
        raise InputError("--items is empty; give candidate item ids like --items i1,i2,i3")
    if p.knows_user(user):
        history = p.history(user, split="all")
    else:
        err.print(f"unknown user '{user}': predicting from an empty history")
        history = []
    probs = p.outcome(history, candidates) if next_ else p.predict(history, candidates)
    if p.last_unknown_items:
        err.print(f"unknown items (null in the output): {', '.join(p.last_unknown_items)}")
    if json_:
        _print_json(probs)
        return
    title = f"next-event behaviour, given the item, for user {user}" if next_ else None
    table = Table("item_id", *p.behaviors, title=title or f"behaviour probabilities for user {user}")
    for item, row in probs.items():
        cells = [f"{row[b]:.3f}" for b in p.behaviors] if row else ["unknown item"] * len(p.behaviors)
        table.add_row(item, *cells)
    out.print(table)


@app.command()
def explain(
    model_dir: Annotated[Path, typer.Argument(help="trained model directory")],
    user: Annotated[str, typer.Option("--user", help="user id from the training data")],
    item: Annotated[str, typer.Option("--item", help="the item to explain, e.g. one recommended")],
    k: Annotated[int, typer.Option("--k", help="how many past events to show")] = 5,
    method: Annotated[
        str, typer.Option(help="occlusion (score drop without each event) or rollout (attention)")
    ] = "occlusion",
    behavior: Annotated[
        str | None,
        typer.Option("--behavior", help="explain P(behaviour) instead of the next-item score, e.g. buy"),
    ] = None,
    split: Annotated[str, typer.Option(help="history up to this split's target: test, valid or all")] = "all",
    json_: JsonOpt = False,
) -> None:
    """Which of the user's past events drove an item's score (or behaviour probability), and why."""
    from nextaction.predictor import Predictor

    if k < 1:
        raise InputError(f"--k must be at least 1, got {k}")
    p = Predictor.load(model_dir)
    e = p.explain(p.history(user, split=split), item, method=method, behavior=behavior, top=k)
    if json_:
        _print_json({"user": user, **e.to_dict()})
        return
    out.print(e.sentence)
    value = "share" if method == "rollout" else "Δ score" if behavior is None else f"Δ P({behavior})"
    with_titles = bool(e.titles)  # a catalogue without titles gets no empty column
    columns = ["rank", "position", "item_id", *(["title"] if with_titles else []), "behavior", value, "share"]
    named = f"{e.titles[e.item_id]} ({item})" if e.titles.get(e.item_id) else item
    title = f"past events behind {named} for user {user} ({method}; score {e.score:.3f})"
    table = Table(*columns, title=title)
    for r, ((pos, it, beh, v), share) in enumerate(zip(e.contributions, e.shares, strict=True), 1):
        name = [e.titles.get(it, "")] if with_titles else []
        table.add_row(str(r), str(pos), it, *name, beh, f"{v:+.3f}", f"{share:.0%}")
    out.print(table)
    out.print(
        f"by item ({'all its events removed' if method == 'occlusion' else 'its events summed'}): "
        + ", ".join(f"{e.titles.get(i) or 'item ' + i} {v:+.3f}" for i, v in e.item_contributions)
    )
    if e.similar_history_items:
        out.print(
            "similar to what the user had: "
            + ", ".join(f"{e.titles.get(i) or 'item ' + i} ({s:.2f})" for i, s in e.similar_history_items)
        )


@app.command()
def similar(
    model_dir: Annotated[Path, typer.Argument(help="trained model directory")],
    item: Annotated[str, typer.Option("--item", help="item id")],
    k: Annotated[int, typer.Option("--k", help="how many items")] = 10,
    json_: JsonOpt = False,
) -> None:
    """The items most similar to an item by the model's item vectors (cosine)."""
    from nextaction.predictor import Predictor

    p = Predictor.load(model_dir)
    items = p.similar(item, k=k)
    if json_:
        _print_json({"item_id": item, "items": p.item_entries(items, key="similarity")})
        return
    titles = p.titles
    table = Table("rank", "item_id", "title", "cosine", title=f"items similar to {titles.get(item, item)}")
    for r, (i, s) in enumerate(items, 1):
        table.add_row(str(r), i, titles.get(i, ""), f"{s:.3f}")
    out.print(table)


@items_app.command("add")
def items_add(
    model_dir: Annotated[Path, typer.Argument(help="trained model directory (trained with --items)")],
    source: Annotated[Path, typer.Argument(help="item table: CSV/TSV/Parquet keyed by item_id")],
    json_: JsonOpt = False,
) -> None:
    """Encode new items' text and append them to the model: recommendable at once, no retraining."""
    from nextaction.text.items import add_items

    result = add_items(model_dir, source)
    if json_:
        _print_json(result)
    else:
        out.print(
            f"added {result['added']} items ({result['already_known']} already known) to {model_dir}"
            + (f"; {result['without_text']} without text" if result.get("without_text") else "")
        )


# ---- serve -------------------------------------------------------------------------------------------


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="trained model directory")],
    store: Annotated[str, typer.Option(help="event store URL")] = "sqlite:///events.db",
    host: Annotated[str, typer.Option(help="address to bind; 0.0.0.0 exposes the service")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes (about one per core)")] = 1,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="key for write, delete and admin requests (default: $NEXTACTION_API_KEY, else made up)"
        ),
    ] = None,
    seed: Annotated[
        bool, typer.Option(help="copy the model's known events into an empty store, so its users are known")
    ] = True,
) -> None:
    """Serve recommendations, behaviour probabilities and explanations over HTTP, with live events."""
    from nextaction.server.app import ServeConfig
    from nextaction.server.run import serve as run_server

    config = ServeConfig(model_dir=str(model_dir), store=store, api_key=api_key, seed_store=seed)
    run_server(config, host=host, port=port, workers=workers, announce=out.print)


# ---- demo --------------------------------------------------------------------------------------------


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="where to write the demo's files")] = Path(
        "runs/demo"
    ),
    events: Annotated[int, typer.Option(help="synthetic events to generate")] = 200_000,
    serve_: Annotated[
        bool, typer.Option("--serve", help="then serve the demo model on http://127.0.0.1:8000/")
    ] = False,
    port: Annotated[int, typer.Option(help="port for --serve")] = 8000,
) -> None:
    """Generate a synthetic shop log, prepare it, train, evaluate against baselines, recommend."""
    from nextaction.demo import run_demo

    run_demo(out_dir, n_events=events, console=out)
    if serve_:
        from nextaction.server.app import ServeConfig
        from nextaction.server.run import serve as run_server

        store = f"sqlite:///{out_dir / 'events.db'}"
        run_server(ServeConfig(model_dir=str(out_dir / "model"), store=store), port=port, announce=out.print)


@app.command()
def tune(
    source: Annotated[str, typer.Argument(help="raw event log or a prepared dataset directory")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="study folder (resumes the search in it)")],
    trials: Annotated[int | None, typer.Option("--trials", help="trials to run now")] = None,
    minutes: Annotated[
        float | None, typer.Option("--minutes", help="stop starting trials after this")
    ] = None,
    space: Annotated[
        Path | None, typer.Option("--space", help="TOML of \\[model]/\\[train] ranges (default: built in)")
    ] = None,
    pruner: Annotated[str, typer.Option(help="median, hyperband or none")] = "median",
    seed: Annotated[int, typer.Option(help="seed of the TPE sampler")] = 0,
    format: FormatOpt = None,
    map: MapOpt = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML with fixed \\[model], \\[train], \\[prepare]")
    ] = None,
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Search model and training settings with Optuna on validation NDCG@10 (test events are never read).

    Writes OUT/best.toml for `nextaction train … --config OUT/best.toml`, OUT/trials.csv and OUT/trials.png."""
    from nextaction.tuning import load_space, tune_source

    result = tune_source(
        source,
        out_dir,
        format=format,
        mapping=parse_mapping(map),
        config_path=config,
        sets=set_ or [],
        log=err.print,
        trials=trials,
        minutes=minutes,
        space=load_space(space),
        pruner=pruner,
        seed=seed,
    )
    if json_:
        _print_json(result)
        return
    out.print(
        f"best trial {result['best_trial']}: validation NDCG@10 {result['best_value']:.4f} with "
        f"{result['best_params']}; trials {result['trials']}"
    )
    out.print(f"train it: nextaction train {source} --config {result['best_config']} --out MODEL")


# ---- federated ---------------------------------------------------------------------------------------

FedConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML with \\[model], \\[train], \\[federated]")
]


def _federated_sections(data: Path, config: Path | None, sets: list[str] | None) -> dict[str, Any]:
    from nextaction.federated.runner import check_sections

    return check_sections(data, config, sets or [])


def _print_round(r: dict[str, Any]) -> None:
    """One line per federated round as it ends: a run takes minutes a round."""
    valid = f"  valid NDCG@10 {r['valid_NDCG@10']:.4f}" if "valid_NDCG@10" in r else ""
    err.print(
        f"round {r['round']:>3}  {r['clients']} clients  loss {r.get('train_loss', float('nan')):.4f}  "
        f"{r['train_round_s']:.1f}s  {(r['bytes_down'] + r.get('bytes_up', 0)) / 1e6:.1f} MB{valid}"
    )


def _federated_report(result: dict[str, Any], model_dir: Path, json_: bool) -> None:
    if json_:
        _print_json(result)
        return
    _metrics_table(result, title=f"test metrics of the federated model ({model_dir})")
    fed = json.loads((model_dir / "config.json").read_text())["federated"]
    out.print(
        f"{fed['rounds_run']} rounds, best round {fed['best_round']} (federated validation NDCG@10 "
        f"{fed['best_valid_NDCG@10']:.4f}), median round {fed['round_s_median']:.1f} s and "
        f"{fed['bytes_per_round_median'] / 1e6:.2f} MB; per round: {model_dir / 'metrics.jsonl'}"
    )


@federated_app.command("split")
def federated_split(
    data: Annotated[Path, typer.Argument(help="prepared dataset (nextaction prepare)")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder for client-00, client-01, …")],
    clients: Annotated[int, typer.Option("--clients", help="number of clients")] = 10,
    by: Annotated[
        str, typer.Option("--by", help="iid (random users) or an item column: users go by its dominant value")
    ] = "iid",
    segment: Annotated[
        int | None,
        typer.Option("--segment", help="with --by COLUMN: use part K of 'a|b|c' values (-1 = last)"),
    ] = None,
    holdout_users: Annotated[
        int,
        typer.Option("--holdout-users", help="leave out train.holdout_users=N's users (audit non-members)"),
    ] = 0,
    seed: Annotated[int, typer.Option(help="seed of the iid draw")] = 0,
) -> None:
    """Split one prepared log into client logs with disjoint users (a demo or benchmark federation)."""
    from nextaction.data.dataset import PreparedDataset
    from nextaction.federated.partition import write_clients

    dirs = write_clients(
        PreparedDataset.load(data),
        out_dir,
        clients,
        by=by,
        segment=segment,
        seed=seed,
        holdout_users=holdout_users,
    )
    summary = json.loads((out_dir / "split.json").read_text())
    out.print(f"[green]wrote[/green] {len(dirs)} client logs to {out_dir}: users {summary['users']}")


@federated_app.command("serve")
def federated_serve(
    data: Annotated[
        Path, typer.Argument(help="prepared dataset: the item catalogue (and the evaluation users)")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="model directory to write")],
    port: Annotated[int, typer.Option(help="the SuperLink's port (clients connect to HOST:PORT)")] = 9092,
    config: FedConfigOpt = None,
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Start the aggregation server (a Flower SuperLink) and run FedAvg once federated.min_clients connect."""
    from nextaction.federated.runner import serve

    sections = _federated_sections(data, config, set_)
    err.print(
        f"SuperLink on port {port}: start clients with `nextaction federated client DATA --server HOST:{port}`"
    )
    result = serve(data, out_dir, sections=sections, port=port, on_round=_print_round)
    _federated_report(result, out_dir, json_)


@federated_app.command("client")
def federated_client(
    data: Annotated[Path, typer.Argument(help="this client's own prepared log (same item vocabulary)")],
    server: Annotated[str, typer.Option("--server", help="the SuperLink, HOST:PORT")] = "127.0.0.1:9092",
    port: Annotated[int, typer.Option(help="this SuperNode's own port")] = 9094,
    threads: Annotated[int, typer.Option(help="torch threads (0 = all cores)")] = 0,
) -> None:
    """Join a federation as one client (a Flower SuperNode); runs until stopped (Ctrl-C)."""
    from nextaction.federated.runner import client

    code = client(data, server, port=port, threads=threads)
    raise typer.Exit(code)


@federated_app.command("run")
def federated_run(
    data: Annotated[Path, typer.Argument(help="prepared dataset to split into clients (nextaction prepare)")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="model directory to write")],
    clients: Annotated[int, typer.Option("--clients", help="number of local clients")] = 10,
    by: Annotated[str, typer.Option("--by", help="iid or an item column (see `federated split`)")] = "iid",
    segment: Annotated[int | None, typer.Option("--segment", help="see `federated split`")] = None,
    config: FedConfigOpt = None,
    set_: SetOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The whole federation on this machine: split DATA, one SuperNode per client, the SuperLink, FedAvg."""
    from nextaction.data.dataset import PreparedDataset
    from nextaction.federated.partition import write_clients
    from nextaction.federated.runner import run_local

    sections = _federated_sections(data, config, set_)
    holdout = int(sections.get("train", {}).get("holdout_users", 0))
    dirs = write_clients(
        PreparedDataset.load(data),
        out_dir / "clients",
        clients,
        by=by,
        segment=segment,
        holdout_users=holdout,
    )
    err.print(f"{clients} clients in {out_dir / 'clients'}; Flower logs in {out_dir / '.flower'}")
    result = run_local(data, dirs, out_dir, sections=sections, on_round=_print_round)
    _federated_report(result, out_dir, json_)


def main() -> None:
    try:
        # Standalone mode: click handles --help, usage errors (exit 2) and exits with SystemExit.
        app()
    except InputError as e:
        # escaped: a message may quote a [section] that Rich would take for markup and drop
        err.print(f"[red]error:[/red] {escape(e.one_line())}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("aborted")
        sys.exit(130)
    except Exception as e:  # a bug of ours, not the user's mistake
        if os.environ.get("NEXTACTION_DEBUG"):
            raise
        err.print(
            f"[red]internal error:[/red] {type(e).__name__}: {e} (a bug in nextaction: please report it; "
            "NEXTACTION_DEBUG=1 shows the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
