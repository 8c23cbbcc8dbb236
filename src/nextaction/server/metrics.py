"""Prometheus metrics of the service, and the ASGI middleware that records every request.

With ``serve --workers N`` each worker is a process; ``nextaction serve`` then points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the workers start, and ``/metrics`` adds up all
workers' values (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# seconds; dense below 25 ms, where the service's latency target sits
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nextaction_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "nextaction_request_seconds",
            "Request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ingested = Counter(
            "nextaction_events_ingested", "Events stored by POST /events", registry=self.registry
        )
        self.deleted = Counter(
            "nextaction_events_deleted", "Events erased by DELETE /users", registry=self.registry
        )

    def events_stored(self, n: int) -> None:
        self.ingested.inc(n)

    def events_deleted(self, n: int) -> None:
        self.deleted.inc(n)

    def render(self, *, events_in_store: int, generation: int) -> str:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        else:
            registry = self.registry
        text = generate_latest(registry).decode()
        # state that lives in the store, the same for every worker
        return text + (
            "# HELP nextaction_events_stored Events in the store\n"
            "# TYPE nextaction_events_stored gauge\n"
            f"nextaction_events_stored {events_in_store}\n"
            "# HELP nextaction_model_generation How many times the model was reloaded\n"
            "# TYPE nextaction_model_generation gauge\n"
            f"nextaction_model_generation {generation}\n"
        )


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware, which costs a task per request): counts and times requests by
    route template, and refuses bodies over the size limit before anyone reads them."""

    def __init__(self, app: Any, *, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                await _send_json(send, 413, f'{{"error": "body: at most {self.max_body_bytes} bytes"}}')
                self._record(scope, 413, t0)
                return

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._record(scope, status, t0)

    def _record(self, scope: dict[str, Any], status: int, t0: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        self.metrics.requests.labels(method, path, str(status)).inc()
        self.metrics.latency.labels(method, path).observe(time.perf_counter() - t0)


async def _send_json(send: Any, status: int, body: str) -> None:
    data = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
