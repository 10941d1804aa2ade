"""The HTTP face of `RiskService` (FastAPI): routes, one-line errors, Prometheus metrics, the page.

Every refusal is a 4xx whose JSON body is `{"error": "<one line>"}`; nothing is stored for
a refused request and the server goes on serving.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from typing_extensions import NotRequired, TypedDict

from seqchurn.errors import DataError
from seqchurn.realtime.service import Conflict, NotFound, RiskService, TooLarge

log = logging.getLogger(__name__)

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
P_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


class Event(BaseModel):
    """One event of the data contract (DESIGN section 2) plus the id that makes retries safe."""

    model_config = _STRICT
    event_id: StrictStr | StrictInt
    user_id: StrictStr | StrictInt
    timestamp: StrictStr
    event_type: StrictStr | None = None
    amount: float | None = None
    quantity: float | None = None


class WhatIfEvent(Event):
    event_id: StrictStr | StrictInt | None = None


class EventBatch(BaseModel):
    model_config = _STRICT
    events: list[Event]


class _EventDict(TypedDict):
    """`Event` as the plain dict the service takes, validated straight from the body's bytes."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    event_id: StrictStr | StrictInt
    user_id: StrictStr | StrictInt
    timestamp: StrictStr
    event_type: NotRequired[StrictStr | None]
    amount: NotRequired[float | None]
    quantity: NotRequired[float | None]


class _EventBatchDict(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    events: list[_EventDict]


# POST /events is the hot path: pydantic reads the JSON and checks it in one pass, with no
# model objects to build and dump again; FastAPI's body machinery cost more than that.
_EVENT_BATCH = TypeAdapter(_EventBatchDict)


def _event_batch_doc() -> dict:
    """The body's schema for the OpenAPI page, `Event` inlined (no `$defs` there)."""
    schema = EventBatch.model_json_schema()
    schema["properties"]["events"]["items"] = schema.pop("$defs")["Event"]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class ScoreRequest(BaseModel):
    model_config = _STRICT
    events: list[WhatIfEvent]
    as_of: StrictStr | None = None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _validation_message(err: RequestValidationError | ValidationError) -> str:
    problems = err.errors()
    first = problems[0] if problems else {}
    if first.get("type") == "json_invalid":
        return "the body is not valid JSON"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where or 'body'}: {first.get('msg', 'invalid')}{more}"


class _ServiceCollector:
    """Prometheus collector of what the service did, HTTP or not (the timed sweep), and of
    today's p_churn over the users scored today, read from the store at each scrape."""

    def __init__(self, service: RiskService):
        self.service = service

    def collect(self):
        counts = self.service.counters
        yield CounterMetricFamily(
            "seqchurn_events_ingested", "new events stored", value=counts["events_ingested"]
        )
        yield CounterMetricFamily(
            "seqchurn_alerts_raised", "alerts written", value=counts["alerts_raised"]
        )
        p = self.service.p_churn_today()
        buckets = [(str(b), float((p <= b).sum())) for b in P_BUCKETS]
        buckets.append(("+Inf", float(len(p))))
        family = HistogramMetricFamily(
            "seqchurn_p_churn_today", "p_churn of the users scored as of today"
        )
        family.add_metric([], buckets, sum_value=float(p.sum()))
        yield family


class _Measure:
    """Counts and times every request by route; an unhandled error becomes a one-line 500.

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` runs each request through an
    extra task and stream, which cost a POST /events more than its validation."""

    def __init__(self, app, latency: Histogram, requests: Counter):
        self.app, self.latency, self.requests = app, latency, requests

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), []

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as err:  # the service must keep serving whatever one request does
            log.exception("request failed")
            if status:  # the response has begun: nothing more can be said on this one
                raise
            await _error(500, f"internal error: {_first_line(err)}")(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = route.path if route is not None else "unmatched"
            self.latency.labels(path).observe(time.perf_counter() - start)
            self.requests.labels(scope["method"], path, str(status[0] if status else 500)).inc()


def create_app(service: RiskService) -> FastAPI:
    app = FastAPI(title="seqchurn early warning", version=service.version)
    registry = CollectorRegistry()
    requests = Counter(
        "seqchurn_requests", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "seqchurn_request_seconds",
        "request latency",
        ["route"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    registry.register(_ServiceCollector(service))

    app.add_middleware(_Measure, latency=latency, requests=requests)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, err: RequestValidationError | ValidationError):
        message = _validation_message(err)
        return _error(400 if message.startswith("the body is not") else 422, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, err: StarletteHTTPException):
        return _error(err.status_code, _first_line(Exception(err.detail)))

    @app.exception_handler(DataError)
    async def refused(_request, err: DataError):
        status = {NotFound: 404, Conflict: 409, TooLarge: 413}.get(type(err), 422)
        return _error(status, _first_line(err))

    @app.post("/events", openapi_extra=_event_batch_doc())
    async def post_events(request: Request) -> Response:
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if kind != "application/json" and not kind.endswith("+json"):
            return _error(415, f"POST /events takes application/json, not {kind!r}")
        try:
            batch = _EVENT_BATCH.validate_json(await request.body())
        except ValidationError as err:
            return await invalid(request, err)
        return JSONResponse(await run_in_threadpool(service.ingest, batch["events"]))

    @app.get("/users/{user_id}/risk")
    def get_risk(user_id: str, as_of: str | None = None) -> dict:
        return service.risk(user_id, as_of)

    @app.post("/score")
    def post_score(request: ScoreRequest) -> dict:
        events = [e.model_dump() for e in request.events]
        return {"users": service.what_if(events, request.as_of)}

    @app.get("/alerts")
    def get_alerts(since: str | None = None, tier: str | None = None, limit: int = 100) -> dict:
        if not 1 <= limit <= 10_000:
            raise DataError(f"limit must be between 1 and 10000, got {limit}")
        return {"alerts": service.alerts(since, tier, limit)}

    @app.post("/sweep")
    def post_sweep() -> dict:
        return service.sweep()

    @app.get("/summary")
    def get_summary() -> dict:
        return service.summary()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model_version": service.version}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    page = resources.files("seqchurn.realtime").joinpath("page.html").read_text()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    return app
