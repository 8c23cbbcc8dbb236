"""Flower's deployment engine on real processes: a SuperLink, SuperNodes, and the run submitted to them.

Why the deployment engine: it runs here with nothing but the ``flwr`` package (its simulation engine needs
Ray), and it is what a federation uses in production: every client is a separate SuperNode process that
talks to the SuperLink over HTTP, and a ``flwr-clientapp`` process per message trains on that client's log.

- ``serve``: a SuperLink on ``--port``, then the run submitted with ``flwr run`` (the ServerApp waits for
  ``federated.min_clients`` SuperNodes), then the SuperLink is stopped.
- ``client``: one SuperNode with the client's own prepared log as node config.
- ``run_local``: both on localhost, N SuperNodes over N client logs: the demo and the benchmark.

Each federation gets its own ``FLWR_HOME`` (``OUT/.flower``: the CLI's connection config, Flower's state)
and its own ports, so that two federations on one machine do not meet.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from nextaction.errors import InputError

APP_MODULE = "nextaction_federated_app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    """A console script of the running interpreter's environment (flower-superlink, flwr, …)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def flower_env(home: Path, threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # the SuperLink and SuperNodes start flower-superexec and flwr-* processes by name
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PYTHONUNBUFFERED="1",
    )
    # the SuperExec looks for work every second by default: a round waits for it twice
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    if threads:
        # one process per client on a shared machine: each gets its share of the cores (oversubscribed
        # OpenMP threads make every process several times slower)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def write_app(app_dir: Path, *, data: Path, out: Path, sections: dict[str, Any], dp: bool) -> Path:
    """The Flower App that ``flwr run`` bundles: a pyproject with the run config, and a module that names
    nextaction's ServerApp and ClientApp (the code itself is the installed nextaction)."""
    app_dir.mkdir(parents=True, exist_ok=True)
    client = "client_app_dp" if dp else "client_app"
    (app_dir / f"{APP_MODULE}.py").write_text(
        '"""Written by nextaction federated: the apps are nextaction.federated.flower\'s."""\n'
        f"from nextaction.federated.flower import server_app as server, {client} as client\n\n"
        '__all__ = ["client", "server"]\n'
    )
    sections_json = json.dumps(sections).replace("\\", "\\\\").replace('"', '\\"')
    (app_dir / "pyproject.toml").write_text(
        "[build-system]\n"
        'requires = ["setuptools"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        "[project]\n"
        'name = "nextaction-federated"\n'
        'version = "1.0.0"\n'
        'description = "nextaction: federated next-item training (FedAvg)"\n'
        'license = "Apache-2.0"\n'
        "dependencies = []\n\n"
        "[tool.flwr.app]\n"
        'publisher = "nextaction"\n\n'
        "[tool.flwr.app.components]\n"
        f'serverapp = "{APP_MODULE}:server"\n'
        f'clientapp = "{APP_MODULE}:client"\n\n'
        "[tool.flwr.app.config]\n"
        f"data = {json.dumps(str(data.resolve()))}\n"
        f"out = {json.dumps(str(out.resolve()))}\n"
        f'sections = "{sections_json}"\n'
    )
    return app_dir


def _wait_http(port: int, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not open port {port} in {timeout:.0f} s; see {log}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def superlink(home: Path, port: int, *, host: str = "127.0.0.1") -> Iterator[subprocess.Popen[bytes]]:
    """A SuperLink on ``host``:``port`` (without TLS), its state in memory, stopped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "superlink.log"
    cmd = [
        _bin("flower-superlink"),
        "--insecure",
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=flower_env(home))
    try:
        _wait_http(port, proc, log, "flower-superlink")
        yield proc
    finally:
        _stop(proc)


def supernode_command(data: Path, server: str, *, port: int, threads: int) -> list[str]:
    node_config = f"data={json.dumps(str(data.resolve()))} threads={threads}"
    return [
        _bin("flower-supernode"),
        "--insecure",
        "--superlink",
        server,
        "--port",
        str(port),
        "--node-config",
        node_config,
    ]


@contextmanager
def supernode(
    home: Path, data: Path, server: str, *, name: str, threads: int
) -> Iterator[subprocess.Popen[bytes]]:
    """A SuperNode for one client's log, stopped on exit."""
    port = free_port()
    log = home / f"{name}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            supernode_command(data, server, port=port, threads=threads),
            stdout=f,
            stderr=subprocess.STDOUT,
            env=flower_env(home, threads),
        )
    try:
        _wait_http(port, proc, log, f"flower-supernode ({name})")
        yield proc
    finally:
        _stop(proc)


def submit(
    app_dir: Path,
    home: Path,
    port: int,
    *,
    log: Path,
    metrics: Path,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    timeout: float | None = None,
) -> None:
    """``flwr run APP`` against the SuperLink on ``port``; returns when the run has finished. ``on_round``
    gets each line the ServerApp appends to ``metrics`` (metrics.jsonl) as the rounds end."""
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n'
        f'[superlink.local]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    seen = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [_bin("flwr"), "run", str(app_dir), "local", "--stream"],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=flower_env(home),
        )
        try:
            while proc.poll() is None or seen < _lines(metrics):
                if deadline is not None and time.monotonic() > deadline:
                    raise RuntimeError(f"the federated run took longer than {timeout:.0f} s; see {log}")
                rows = metrics.read_text().splitlines() if metrics.exists() else []
                for row in rows[seen:]:
                    if on_round is not None:
                        on_round(json.loads(row))
                seen = len(rows)
                time.sleep(1.0 if proc.poll() is None else 0)
        finally:
            _stop(proc)
    if proc.returncode:
        raise RuntimeError(f"flwr run exited with {proc.returncode}; see {log}:\n{_tail(log)}")


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def check_sections(data: Path, config: Path | None, sets: list[str]) -> dict[str, Any]:
    """Read ``--config``/``--set`` and check them here, before any process starts: a bad key or a refused
    option is a one-line error now, not a failure inside the ServerApp."""
    from nextaction.config import build, load_sections
    from nextaction.data.dataset import PreparedDataset
    from nextaction.federated.flower import SECTIONS, model_config
    from nextaction.federated.local import FederatedConfig
    from nextaction.training.state import TrainConfig

    sections = load_sections(config, sets, sections=SECTIONS)
    build(TrainConfig, sections["train"], where="[train]")
    build(FederatedConfig, sections["federated"], where="[federated]")
    model_config(PreparedDataset.load(data), sections["model"])
    return sections


def _finished(out: Path, log: Path) -> dict[str, Any]:
    result = out / "eval_test.json"
    if not result.is_file():
        raise RuntimeError(
            f"the federated run wrote no model to {out}; its log ({log}) ends:\n{_tail(log, 30)}"
        )
    return dict(json.loads(result.read_text()))


def _check_clients(clients: Sequence[Path]) -> None:
    for c in clients:
        if not (Path(c) / "events.parquet").is_file():
            raise InputError(
                "is not a prepared dataset; run `nextaction federated split` or `prepare`", path=c
            )


def serve(
    data: Path,
    out: Path,
    *,
    sections: dict[str, Any],
    port: int,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Start a SuperLink, submit the run, wait for it (clients connect with :func:`client`)."""
    home = out / ".flower"
    for stale in ("eval_test.json", "metrics.jsonl"):
        (out / stale).unlink(missing_ok=True)
    dp = float(sections.get("federated", {}).get("dp_noise", 0.0)) > 0
    app = write_app(home / "app", data=data, out=out, sections=sections, dp=dp)
    with superlink(home, port, host="0.0.0.0"):  # clients on other machines connect to it
        submit(
            app,
            home,
            port,
            log=home / "run.log",
            metrics=out / "metrics.jsonl",
            on_round=on_round,
            timeout=timeout,
        )
    return _finished(out, home / "run.log")


def client(data: Path, server: str, *, port: int, threads: int, home: Path | None = None) -> int:
    """Run one SuperNode in the foreground until it stops (Ctrl-C); returns its exit code."""
    _check_clients([data])
    home = home or Path(tempfile.mkdtemp(prefix="nextaction-flower-"))
    proc = subprocess.Popen(
        supernode_command(data, server, port=port, threads=threads), env=flower_env(home, threads)
    )
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _stop(proc)
        return 130


def run_local(
    data: Path,
    clients: Sequence[Path],
    out: Path,
    *,
    sections: dict[str, Any],
    threads: int = 0,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """A whole federation on this machine: SuperLink, one SuperNode per client log, the run, then teardown."""
    _check_clients(clients)
    home = out / ".flower"
    home.mkdir(parents=True, exist_ok=True)
    for stale in ("eval_test.json", "metrics.jsonl"):
        (out / stale).unlink(missing_ok=True)
    fed = dict(sections.get("federated", {}))
    fed.setdefault("min_clients", len(clients))
    sections = {**sections, "federated": fed}
    threads = threads or max(1, (os.cpu_count() or 1) // len(clients))
    dp = float(fed.get("dp_noise", 0.0)) > 0
    app = write_app(home / "app", data=data, out=out, sections=sections, dp=dp)
    port = free_port()
    with ExitStack() as stack:
        stack.enter_context(superlink(home, port))
        for k, c in enumerate(clients):
            stack.enter_context(
                supernode(home, Path(c), f"127.0.0.1:{port}", name=f"client-{k:02d}", threads=threads)
            )
        submit(
            app,
            home,
            port,
            log=home / "run.log",
            metrics=out / "metrics.jsonl",
            on_round=on_round,
            timeout=timeout,
        )
    return _finished(out, home / "run.log")
