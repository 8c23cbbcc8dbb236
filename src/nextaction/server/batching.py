"""Micro-batching: concurrent recommendation requests share one forward pass.

One request's forward pass over a short history is dominated by per-operation overhead, not arithmetic
(about 1 ms for 2 layers, whatever the batch). So each worker process runs one batching thread: request
threads queue their history and wait; the thread takes everything queued (up to ``max_batch``), scores it in
one :meth:`~nextaction.predictor.Predictor.recommend_many` call and hands each request its rows. Under load
the batches grow by themselves; a lone request waits for nothing but its own forward pass. Having one
thread do the model work per process also keeps torch from oversubscribing the cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from nextaction.predictor import Predictor


@dataclass(frozen=True)
class _Job:
    history: list[Any]
    k: int
    exclude_seen: bool | None
    future: Future[list[tuple[str, float]]]


class RecommendBatcher:
    def __init__(self, current: Callable[[], Predictor], *, max_batch: int = 64) -> None:
        self._current = current  # the holder's current predictor, read per batch (reloads swap it)
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="nextaction-batcher", daemon=True)
        self._thread.start()
        self.batches = 0
        self.requests = 0

    def submit(
        self, history: list[Any], k: int, *, exclude_seen: bool | None = None
    ) -> Future[list[tuple[str, float]]]:
        """Queue one request; the future resolves to its (item_id, score) list."""
        job = _Job(history, k, exclude_seen, Future())
        self._queue.put(job)
        return job.future

    def recommend(
        self, history: list[Any], k: int, *, exclude_seen: bool | None = None
    ) -> list[tuple[str, float]]:
        return self.submit(history, k, exclude_seen=exclude_seen).result()

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < self._max_batch:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.batches += 1
            self.requests += len(jobs)
            predictor = self._current()
            # one call per exclude_seen setting (in practice all requests share it), at the largest k
            groups: dict[bool | None, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.exclude_seen, []).append(job)
            for exclude_seen, group in groups.items():
                k = max(j.k for j in group)
                try:
                    results = predictor.recommend_many(
                        [j.history for j in group], k, exclude_seen=exclude_seen
                    )
                except Exception as e:  # handed to the request, which reports it
                    for j in group:
                        j.future.set_exception(e)
                    continue
                for j, r in zip(group, results, strict=True):
                    j.future.set_result(r[: j.k])
