"""Start the service on uvicorn: what ``nextaction serve`` and ``nextaction demo --serve`` call."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from nextaction.errors import InputError
from nextaction.server.app import API_KEY_ENV, CONFIG_ENV, ServeConfig, create_app, new_api_key


def prepare_store(config: ServeConfig) -> int:
    """Open (create) the store and seed it from the model once, before any worker starts; returns the
    number of events stored."""
    from nextaction.server.store import open_store, seed_from_model

    if not (Path(config.model_dir) / "config.json").is_file():
        raise InputError(
            "is not a trained model directory (no config.json); run `nextaction train`", path=config.model_dir
        )
    store = open_store(config.store)
    try:
        if config.seed_store:
            seed_from_model(store, config.model_dir)
        return store.count()
    finally:
        store.close()


def serve(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    announce: Callable[[str], None] = print,
) -> None:
    """Run until interrupted. The API key comes from the config, the environment, or is made up and shown."""
    import uvicorn

    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    api_key = config.api_key or os.environ.get(API_KEY_ENV)
    if not api_key:
        api_key = new_api_key()
        announce(f"API key for write, delete and admin requests (X-API-Key header): {api_key}")
    config = ServeConfig(**{**config.__dict__, "api_key": api_key})
    n = prepare_store(config)
    announce(f"event store {config.store}: {n:,} events")
    announce(f"serving {config.model_dir} on http://{host}:{port}/ (API docs at /docs), {workers} worker(s)")
    if workers == 1:
        uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False)
        return
    # several processes: each builds its own app from the environment; metrics are summed over files
    os.environ[CONFIG_ENV] = config.to_env()
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="nextaction-metrics-"))
    uvicorn.run(
        "nextaction.server.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
