"""Data-preparation benchmark: wall time and peak memory of ``nextaction prepare`` (run by ``make bench-data``).

Cases: a synthetic log of 10M events (generated once, cached as CSV under bench/.cache/), and the real
ML-100k, Amazon Beauty and RetailRocket logs from ../shared/data when present (target: ≤ 3 s each). Every
case runs ``nextaction prepare`` as a child process, ``--runs`` times (median reported), and the same steps
in plain pandas (bench/pandas_reference.py) for comparison. Peak RSS is the child's own, from ``wait4``.

The results are printed as a Markdown table and written to the "Data preparation" section of
BENCHMARKS.md (other sections are left alone).

    python bench/bench_data.py                      # the full benchmark
    python bench/bench_data.py --events 100000 --runs 1 --no-write   # a quick smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
SHARED = ROOT.parent / "shared" / "data"
BENCHMARKS = ROOT / "BENCHMARKS.md"
SECTION = "Data preparation"
HEADER = (
    "# Benchmarks\n\n"
    "Measured numbers only: each section says the command, the date and the machine it ran on.\n"
    "Sections are rewritten by the scripts under bench/.\n"
)
REAL_TARGET_S = 3.0


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    format: str  # as understood by both `nextaction prepare --format` and pandas_reference.py
    target_s: float | None = None
    target_rss_mib: float | None = None

    @property
    def rows_file(self) -> Path:
        """The file holding the events (a MovieLens folder holds them in u.data)."""
        return self.path / "u.data" if self.path.is_dir() else self.path


@dataclass
class Measured:
    walls: list[float] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.walls)


def run_child(cmd: list[str]) -> tuple[float, float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS MiB of that child, exit code, stderr tail)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the max over all children so far.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    # The last stderr line says what went wrong; no pipes, it goes into a Markdown table.
    return wall, usage.ru_maxrss / 1024, proc.returncode, (lines[-1] if lines else "").replace("|", "/")


def measure(cmd_for: Callable[[Path], list[str]], runs: int, scratch: Path) -> Measured:
    result = Measured()
    for i in range(runs):
        out = scratch / f"run{i}"
        shutil.rmtree(out, ignore_errors=True)
        wall, rss, code, tail = run_child(cmd_for(out))
        shutil.rmtree(out, ignore_errors=True)
        if code != 0:
            result.error = f"exit {code}: {tail}"
            return result
        result.walls.append(wall)
        result.peak_rss_mib = max(result.peak_rss_mib, rss)
    return result


def synthetic_case(n_events: int) -> tuple[Case, float | None]:
    """The cached synthetic CSV (generated on first use); also the generation time when it just ran."""
    folder = CACHE / f"synthetic-{n_events}-seed0"
    events = folder / "events.csv"
    generated_s = None
    stamp = folder / "generated.json"
    if not events.is_file():
        from nextaction.datasets import synthetic

        start = time.perf_counter()
        log = synthetic(n_events=n_events, seed=0)
        generated_s = time.perf_counter() - start
        log.write(folder)
        stamp.write_text(json.dumps({"n_events": n_events, "generate_s": round(generated_s, 2)}))
    elif stamp.is_file():
        generated_s = json.loads(stamp.read_text()).get("generate_s")
    # The targets for 10M events: ≤ 60 s and ≤ 3 GB peak RSS.
    big = n_events >= 10_000_000
    return Case(
        f"synthetic {n_events:,}", events, "csv", 60.0 if big else None, 3072.0 if big else None
    ), generated_s


def fixed_cost_case() -> Case:
    """A 100-event log: its time is start-up and imports, the floor under every other row."""
    case, _ = synthetic_case(100)
    return Case("synthetic 100 (fixed cost)", case.path, "csv")


def real_cases() -> list[Case]:
    cases = [
        Case("ML-100k", SHARED / "movielens-100k", "movielens", REAL_TARGET_S),
        Case("Amazon Beauty", SHARED / "amazon-beauty-s3rec" / "Beauty.txt", "sequences", REAL_TARGET_S),
        Case("RetailRocket", SHARED / "retailrocket-mb" / "events.csv", "csv", REAL_TARGET_S),
    ]
    return [c for c in cases if c.rows_file.is_file()]


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = "? GiB"
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kib = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
        ram = f"{kib / 2**20:.0f} GiB"
    return f"{os.cpu_count()} cores, {ram} RAM, {model}, {platform.system()} {platform.release()}"


def count_rows(case: Case) -> int:
    if case.format == "sequences":
        # One line per user: the events are the words after the user id.
        with case.rows_file.open() as f:
            return sum(len(line.split()) - 1 for line in f)
    with case.rows_file.open("rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
    return lines - (1 if case.format == "csv" else 0)  # the header


def commands(case: Case, cli: Path, *, pandas: bool) -> dict[str, Callable[[Path], list[str]]]:
    def ours(out: Path) -> list[str]:
        return [str(cli), "prepare", str(case.path), "--format", case.format, "--out", str(out)]

    def reference(out: Path) -> list[str]:
        script = ROOT / "bench" / "pandas_reference.py"
        return [sys.executable, str(script), str(case.path), "--format", case.format, "--out", str(out)]

    return {"nextaction": ours, "pandas": reference} if pandas else {"nextaction": ours}


def table(rows: list[tuple[Case, int, str, Measured]]) -> str:
    lines = [
        "| data | events | tool | median s | runs (s) | peak RSS MiB | target |",
        "|---|---:|---|---:|---|---:|---|",
    ]
    for case, n, tool, m in rows:
        if m.error:
            lines.append(f"| {case.name} | {n:,} | {tool} | failed | {m.error} | | |")
            continue
        runs = ", ".join(f"{w:.2f}" for w in m.walls)
        target = ""
        if case.target_s is not None and tool == "nextaction":
            target = f"≤ {case.target_s:g} s: {'met' if m.median <= case.target_s else 'MISSED'}"
            if case.target_rss_mib is not None:
                ok = m.peak_rss_mib <= case.target_rss_mib
                target += f", ≤ {case.target_rss_mib / 1024:g} GB: {'met' if ok else 'MISSED'}"
        lines.append(
            f"| {case.name} | {n:,} | {tool} | {m.median:.2f} | {runs} | {m.peak_rss_mib:,.0f} | {target} |"
        )
    return "\n".join(lines)


def write_section(body: str) -> None:
    """Replace (or append) the '## Data preparation' section of BENCHMARKS.md, atomically."""
    text = BENCHMARKS.read_text() if BENCHMARKS.is_file() else HEADER
    heading = f"## {SECTION}\n"
    section = heading + "\n" + body.strip() + "\n"
    if heading in text:
        start = text.index(heading)
        end = text.find("\n## ", start + len(heading))
        rest = text[end + 1 :] if end != -1 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = BENCHMARKS.with_name(f".{BENCHMARKS.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, BENCHMARKS)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000, help="synthetic log size (default 10M)")
    parser.add_argument("--runs", type=int, default=3, help="runs per case; the median is reported")
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas reference")
    parser.add_argument("--no-real", action="store_true", help="skip the real datasets")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic log")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    cli = Path(sys.executable).with_name("nextaction")
    if not cli.exists():
        cli = Path(shutil.which("nextaction") or "nextaction")
    CACHE.mkdir(parents=True, exist_ok=True)
    cases = [fixed_cost_case()]
    if not args.no_real:
        cases += real_cases()
    generated_s = None
    if not args.no_synthetic:
        synth, generated_s = synthetic_case(args.events)
        cases.append(synth)

    rows: list[tuple[Case, int, str, Measured]] = []
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch_dir:
        scratch = Path(scratch_dir)
        for case in cases:
            n = count_rows(case)
            for tool, cmd_for in commands(case, cli, pandas=not args.no_pandas).items():
                print(f"… {case.name}: {tool}", file=sys.stderr, flush=True)
                rows.append((case, n, tool, measure(cmd_for, args.runs, scratch)))

    result = table(rows)
    print(result)
    command = (
        "make bench-data"
        if args.events == 10_000_000
        else f"python bench/bench_data.py --events {args.events}"
    )
    notes = [
        f"Command: `{command}` (median of {args.runs} run{'s' * (args.runs > 1)} per row; each run is a fresh "
        "child process, wall time includes interpreter start-up and imports: see the fixed-cost row).",
        f"Date: {dt.date.today().isoformat()}. Machine: {machine()} (shared with other work while measured).",
        "Peak RSS: the child's maximum resident set size (`wait4` rusage).",
        "pandas: bench/pandas_reference.py — the same steps written plainly (read, parse timestamps, drop "
        "missing, dedup, index, sort, leave-one-out, parquet), without reject bookkeeping or a report.",
    ]
    if generated_s is not None:
        notes.append(
            f"Generating the synthetic {args.events:,}-event log took {generated_s:.1f} s (in process)."
        )
    if not args.no_write:
        write_section("\n".join(f"- {n}" for n in notes) + "\n\n" + result)
        print(f"\nwrote the '{SECTION}' section of {BENCHMARKS}", file=sys.stderr)


if __name__ == "__main__":
    main()
