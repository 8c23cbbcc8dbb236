"""The HTTP API: FastAPI routes over a :class:`~nextaction.predictor.Predictor` and an event store.

Routes stay thin: they validate (pydantic, unknown fields rejected), read or write the store, and call the
predictor. Every prediction reads the user's *current* history from the store, so an event acknowledged a
millisecond ago already counts. Build the app with :func:`create_app`; ``nextaction serve`` runs it on
uvicorn.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from nextaction.data.schema import ITEM_ID
from nextaction.errors import InputError
from nextaction.predictor import Predictor
from nextaction.server.store import NewEvent, SQLiteEventStore, open_store, seed_from_model

API_KEY_ENV = "NEXTACTION_API_KEY"
CONFIG_ENV = "NEXTACTION_SERVE_CONFIG"  # how `serve --workers N` hands the config to each worker process


@dataclass(frozen=True)
class ServeConfig:
    """Everything the service needs; limits protect it from requests that would stall a worker."""

    model_dir: str
    store: str = "sqlite:///events.db"
    api_key: str | None = None
    seed_store: bool = True  # copy the model's known events into an empty store at start
    max_batch: int = 10_000  # events per POST /events
    max_k: int = 1_000
    max_history: int = 1_000  # events in an ad-hoc history; also how many stored events a request reads
    max_items: int = 1_000  # candidates per POST /predict
    max_body_bytes: int = 16 * 1024 * 1024
    reload_check_s: float = 1.0  # how often a worker looks whether another one reloaded the model

    def to_env(self) -> str:
        import json

        return json.dumps(self.__dict__)

    @classmethod
    def from_env(cls) -> ServeConfig:
        import json

        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            raise RuntimeError(f"{CONFIG_ENV} is not set; start the service with `nextaction serve`")
        return cls(**json.loads(raw))


# ---- request bodies ---------------------------------------------------------------------------------

Id = StrictStr | StrictInt  # ids may be numbers in the user's data; they are stored as strings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(_Strict):
    user_id: Id
    item_id: Id
    behavior: StrictStr | None = None
    timestamp: StrictInt | None = Field(None, ge=0, description="epoch milliseconds; default: now")
    event_id: StrictStr | None = Field(
        None, min_length=1, max_length=256, description="makes a re-post a no-op"
    )


class EventsIn(_Strict):
    events: list[EventIn]


class HistoryEvent(_Strict):
    item_id: Id
    behavior: StrictStr | None = None
    timestamp: StrictInt | None = Field(None, ge=0)
    # what GET /users/{id}/history adds for display; accepted (and ignored) so its events can be posted back
    position: StrictInt | None = Field(None, description="ignored")
    time: StrictStr | None = Field(None, description="ignored")
    title: StrictStr | None = Field(None, description="ignored")


HISTORY_FIELDS = {"item_id", "behavior", "timestamp"}  # what a HistoryEvent gives the predictor


class RecommendIn(_Strict):
    history: list[HistoryEvent | Id] = Field(default_factory=list)
    k: int = Field(10, ge=1)
    behavior: StrictStr | None = None
    exclude_seen: bool | None = None


class PredictIn(_Strict):
    user_id: Id | None = None
    history: list[HistoryEvent | Id] | None = None
    items: list[Id] = Field(min_length=1)

    @field_validator("items")
    @classmethod
    def _strings(cls, v: list[Id]) -> list[Id]:
        return [str(x) for x in v]


class PropensityIn(_Strict):
    user_id: Id | None = None
    history: list[HistoryEvent | Id] | None = None
    behavior: StrictStr | None = Field(None, description="default: the log's conversion behaviour (buy, …)")
    horizon: StrictStr | StrictInt | None = Field(
        None, description="7d, 24h, … (one the model was fitted for); default: the model's"
    )
    at: StrictInt | None = Field(
        None, ge=0, description="window start, epoch ms; default: just after the latest event"
    )


class ReloadIn(_Strict):
    model_dir: StrictStr | None = None


# ---- model holder: atomic swap on reload ---------------------------------------------------------------


class ModelHolder:
    """The current predictor. A reload builds the new one aside and swaps one reference, so requests in
    flight finish on the old model and none is dropped. With several worker processes, the reload is
    announced in the store and every worker picks it up within ``reload_check_s``."""

    def __init__(self, config: ServeConfig, store: SQLiteEventStore) -> None:
        self.config = config
        self.store = store
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        gen = store.get_meta("model_generation")
        self.generation = int(gen) if gen else 0
        self.model_dir = store.get_meta("model_dir") or config.model_dir
        self.predictor = self._load(self.model_dir)

    @staticmethod
    def _load(model_dir: str) -> Predictor:
        import gc

        p = Predictor.load(model_dir)
        p.warm_up()
        # the predictor's id tables are long-lived: take them out of the cyclic GC's full collections,
        # whose pauses otherwise show up in the latency tail
        gc.collect()
        gc.freeze()
        return p

    def current(self) -> Predictor:
        now = time.monotonic()
        if now - self._checked > self.config.reload_check_s:
            self._checked = now
            gen = self.store.get_meta("model_generation")
            if gen and int(gen) > self.generation:
                with self._lock:
                    if int(gen) > self.generation:
                        model_dir = self.store.get_meta("model_dir") or self.model_dir
                        self.predictor, self.model_dir, self.generation = (
                            self._load(model_dir),
                            model_dir,
                            int(gen),
                        )
        return self.predictor

    def reload(self, model_dir: str | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        with self._lock:
            target = model_dir or self.model_dir
            new = self._load(target)  # raises InputError for a bad directory: the old model stays
            self.predictor, self.model_dir = new, target
            self.generation += 1
            self.store.set_meta("model_dir", target)
            self.store.set_meta("model_generation", str(self.generation))
        return {
            "model_dir": target,  # the admin's answer (key required) may name the path; /healthz does not
            "model": new.identity,
            "generation": self.generation,
            "seconds": round(time.perf_counter() - t0, 3),
        }


# ---- the app ----------------------------------------------------------------------------------------


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI application for one worker process."""
    import torch

    from nextaction.server.batching import RecommendBatcher
    from nextaction.server.metrics import Metrics, MetricsMiddleware

    # one intra-op thread per worker: concurrency comes from requests in parallel, not from splitting one
    # small forward pass across cores (which only adds synchronisation)
    torch.set_num_threads(1)

    store = open_store(config.store)
    if config.seed_store:
        seed_from_model(store, config.model_dir)  # a no-op once done (`serve` does it before workers start)
    holder = ModelHolder(config, store)
    api_key = config.api_key or os.environ.get(API_KEY_ENV)
    if not api_key:
        raise InputError(f"no API key: pass --api-key or set {API_KEY_ENV}")
    metrics = Metrics()
    batcher = RecommendBatcher(holder.current)

    app = FastAPI(
        title="nextaction",
        version=_version(),
        description="Next-item recommendations, behaviour probabilities and explanations over live events.",
    )
    app.state.holder = holder
    app.state.store = store
    app.state.config = config
    app.add_middleware(MetricsMiddleware, metrics=metrics, max_body_bytes=config.max_body_bytes)

    def require_key(
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        given = x_api_key
        if given is None and authorization and authorization.lower().startswith("bearer "):
            given = authorization[7:]
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send it in the X-API-Key header")

    Auth = Depends(require_key)

    @app.exception_handler(InputError)
    def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"error": exc.one_line()}, status_code=400)

    @app.exception_handler(RequestValidationError)
    def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        lines = [f"{_loc(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:10]]
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        return JSONResponse(
            {"error": "; ".join(lines) + more, "detail": [_plain(e) for e in errors[:100]]}, status_code=422
        )

    @app.exception_handler(HTTPException)
    def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    def check_k(k: int) -> None:
        if not 1 <= k <= config.max_k:
            raise HTTPException(422, f"k: must be between 1 and {config.max_k}, got {k}")

    def stored_history(user_id: str) -> list[dict[str, Any]]:
        return store.history(user_id, limit=config.max_history)

    def given_history(history: list[HistoryEvent | Any]) -> list[Any]:
        if len(history) > config.max_history:
            raise HTTPException(413, f"history: at most {config.max_history} events, got {len(history)}")
        return [
            h.model_dump(include=HISTORY_FIELDS, exclude_none=True) if isinstance(h, HistoryEvent) else str(h)
            for h in history
        ]

    def unknown_items(p: Predictor, history: list[Any]) -> list[str]:
        ids = [str(h[ITEM_ID]) if isinstance(h, dict) else str(h) for h in history]
        return sorted({i for i in ids if not p.knows_item(i)})

    # ---- events ------------------------------------------------------------------------------------

    @app.post("/events", dependencies=[Auth], summary="Store a batch of events (durable when 2xx)")
    def post_events(body: EventsIn) -> dict[str, Any]:
        n = len(body.events)
        if n > config.max_batch:
            raise HTTPException(413, f"events: at most {config.max_batch} per batch, got {n}")
        p = holder.current()
        known = p.behaviors
        now = int(time.time() * 1000)
        accepted: list[NewEvent] = []
        positions: list[int] = []
        rejected: list[dict[str, Any]] = []
        unknown = 0
        for pos, e in enumerate(body.events):
            behavior = e.behavior if e.behavior is not None else (known[0] if len(known) == 1 else None)
            if behavior is None:
                reason = f"behavior is required: the model knows {', '.join(known)}"
            elif behavior not in known:
                reason = f"unknown behavior '{behavior}': the model knows {', '.join(known)}"
            else:
                reason = None
            if reason is not None:
                rejected.append({"index": pos, "event_id": e.event_id, "reason": reason})
                continue
            if not p.knows_item(e.item_id):
                unknown += 1
            accepted.append(
                NewEvent(
                    user_id=str(e.user_id),
                    item_id=str(e.item_id),
                    behavior=str(behavior),
                    timestamp=e.timestamp if e.timestamp is not None else now,
                    event_id=e.event_id,
                )
            )
            positions.append(pos)
        result = store.add(accepted)
        metrics.events_stored(result.stored)
        return {
            "received": n,
            "stored": result.stored,
            "duplicates": [positions[i] for i in result.duplicates],
            "rejected": rejected,
            "unknown_items": unknown,
            "note": "events for items the model does not know yet are stored and ignored by predictions"
            if unknown
            else None,
        }

    # ---- recommendations -------------------------------------------------------------------------------

    @app.get("/users/{user_id}/recommendations", summary="Top-k next items from the user's stored history")
    async def user_recommendations(
        user_id: str,
        k: int = 10,
        behavior: str | None = None,
        exclude_seen: bool | None = None,
    ) -> dict[str, Any]:
        # async: the hot path runs on the event loop (an indexed SQLite read of ≤ max_history rows) and
        # awaits the batching thread, with no hop through the thread pool
        check_k(k)
        history = stored_history(user_id)
        p = holder.current()
        if behavior is None:
            recs = await asyncio.wrap_future(batcher.submit(history, k, exclude_seen=exclude_seen))
        else:
            recs = await run_in_threadpool(
                p.recommend, history, k, behavior=behavior, exclude_seen=exclude_seen
            )
        out: dict[str, Any] = {
            "user_id": user_id,
            "known_user": bool(history),
            "history_length": len(history),
            "behavior": behavior,
            "items": p.item_entries(recs),
        }
        if not history:
            out["fallback"] = (
                "no stored events for this user: recommendations for a new user (an empty history)"
            )
        return out

    @app.post("/recommendations", summary="Top-k next items for a history given in the body")
    def adhoc_recommendations(body: RecommendIn) -> dict[str, Any]:
        check_k(body.k)
        p = holder.current()
        history = given_history(body.history)
        if body.behavior is None:
            recs = batcher.recommend(history, body.k, exclude_seen=body.exclude_seen)
        else:
            recs = p.recommend(history, body.k, behavior=body.behavior, exclude_seen=body.exclude_seen)
        return {
            "history_length": len(history),
            "unknown_items": unknown_items(p, history),
            "behavior": body.behavior,
            "items": p.item_entries(recs),
        }

    # ---- behaviour probabilities -------------------------------------------------------------------

    @app.post("/predict", summary="P(behaviour | history, item) for each candidate item")
    def predict(body: PredictIn) -> dict[str, Any]:
        if body.user_id is not None and body.history is not None:
            raise HTTPException(422, "give either user_id or history, not both")
        if len(body.items) > config.max_items:
            raise HTTPException(413, f"items: at most {config.max_items}, got {len(body.items)}")
        p = holder.current()
        history = (
            stored_history(str(body.user_id))
            if body.user_id is not None
            else given_history(body.history or [])
        )
        preds = p.predict(history, body.items)
        return {
            "behaviors": p.behaviors,
            "history_length": len(history),
            "predictions": preds,
            "unknown_items": [i for i, v in preds.items() if v is None],
        }

    @app.post("/propensity", summary="P(the user does a behaviour at all within a horizon)")
    def propensity(body: PropensityIn) -> dict[str, Any]:
        if body.user_id is not None and body.history is not None:
            raise HTTPException(422, "give either user_id or history, not both")
        p = holder.current()
        history = (
            stored_history(str(body.user_id))
            if body.user_id is not None
            else given_history(body.history or [])
        )
        behavior, stage = p.propensity_target(body.behavior, body.horizon)
        probability = p.propensity(history, behavior=behavior, horizon=stage.horizon, at=body.at)
        return {
            "probability": round(probability, 6),
            "behavior": behavior,
            "horizon": stage.horizon,
            "history_length": len(history),
        }

    # ---- items, explanations ---------------------------------------------------------------------------

    @app.get("/items/{item_id}/similar", summary="Items closest to this one in the model's item space")
    def similar(item_id: str, k: int = 10) -> dict[str, Any]:
        check_k(k)
        p = holder.current()
        if not p.knows_item(item_id):
            raise HTTPException(404, f"unknown item '{item_id}'")
        return {"item_id": item_id, "items": p.item_entries(p.similar(item_id, k=k))}

    @app.get("/users/{user_id}/explanations", summary="Which of the user's past events drove a prediction")
    def explanations(
        user_id: str,
        item: Annotated[str, Query(min_length=1)],
        behavior: str | None = None,
        method: str = "occlusion",
        top: int = 5,
    ) -> dict[str, Any]:
        p = holder.current()
        if not p.knows_item(item):
            raise HTTPException(404, f"unknown item '{item}'")
        if method not in ("occlusion", "rollout"):
            raise HTTPException(422, f"method: must be occlusion or rollout, got '{method}'")
        if not 1 <= top <= 100:
            raise HTTPException(422, f"top: must be between 1 and 100, got {top}")
        explanation = p.explain(stored_history(user_id), item, method=method, behavior=behavior, top=top)
        return {"user_id": user_id, **explanation.to_dict()}

    # ---- users -------------------------------------------------------------------------------------

    @app.get("/users/{user_id}/history", summary="The user's most recent stored events, oldest first")
    def history(user_id: str, limit: int = 50) -> dict[str, Any]:
        if not 1 <= limit <= config.max_history:
            raise HTTPException(422, f"limit: must be between 1 and {config.max_history}, got {limit}")
        p = holder.current()
        events = store.history(user_id, limit=limit)
        total = store.count(user_id=user_id) if len(events) == limit else len(events)
        return {
            "user_id": user_id,
            "clock": p.clock,
            "events": p.describe_history(events, first_position=total - len(events) + 1),
            "known_user": bool(events),
        }

    @app.delete("/users/{user_id}", dependencies=[Auth], summary="Erase every stored event of the user")
    def delete_user(user_id: str) -> dict[str, Any]:
        n = store.delete_user(user_id)
        metrics.events_deleted(n)
        return {"user_id": user_id, "deleted_events": n}

    # ---- operations --------------------------------------------------------------------------------

    @app.get("/healthz", summary="Liveness and what is loaded")
    async def healthz() -> dict[str, Any]:
        # readable without a key: the model's name and content hash, never where it lies on disk
        p = holder.current()
        return {
            "status": "ok",
            "model": p.identity,
            "model_generation": holder.generation,
            "clock": p.clock,
            "items": len(p._item_ids) - 1,
            "behaviors": p.behaviors,
        }

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(events_in_store=store.count(), generation=holder.generation),
            media_type="text/plain; version=0.0.4",
        )

    @app.post("/admin/reload", dependencies=[Auth], summary="Load the model again (or another) and swap")
    def reload(body: ReloadIn | None = None) -> dict[str, Any]:
        return holder.reload(body.model_dir if body else None)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8"))

    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn's worker processes (``--workers N``): the config comes in an environment variable."""
    return create_app(ServeConfig.from_env())


def new_api_key() -> str:
    return secrets.token_urlsafe(24)


def _version() -> str:
    from nextaction import __version__

    return __version__


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    """("body", "events", 0, "user_id") -> "events[0].user_id"."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _plain(err: dict[str, Any]) -> dict[str, Any]:
    """A validation error made JSON-safe (pydantic may put exceptions in ``ctx``)."""
    return {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}


__all__ = ["ServeConfig", "create_app", "create_app_from_env", "new_api_key"]
