"""The shape every service shares: a FastAPI app whose lifespan opens the pool, creates the
topics, starts the broker and closes all of it; health endpoints; logging.

Two ports: the public one (the API, the person's pages, health) and the admin one (`/metrics`,
`/docs`, `/openapi.json`, health), which stays on the internal network: what the service
counts, and the map of its API, are nobody else's business. Every answer of the public port
carries the security headers (`visio_runtime.headers`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import uvicorn
import uvloop
from fastapi import FastAPI, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.kafka import KafkaBroker
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from visio_shared import Topics

from visio_runtime import defects, heap, tracing
from visio_runtime.consumer import EventConsumer
from visio_runtime.db import create_pool
from visio_runtime.headers import SecurityHeaders
from visio_runtime.http_metrics import HttpMetricsMiddleware
from visio_runtime.kafka import ensure_topics, make_broker, publish_metrics, start_broker
from visio_runtime.logs import configure_logging as _configure_logging
from visio_runtime.metrics import CONTENT_TYPE, HttpMetrics, Metrics
from visio_runtime.periodic import PeriodicMetrics, Round, every
from visio_runtime.personal_data import Collect
from visio_runtime.personal_data import add_route as add_personal_data_route
from visio_runtime.production import waiver_warning
from visio_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

Hook = Callable[["Runtime"], Awaitable[None]]


@dataclass
class Runtime:
    """What a running service holds. Built in `create_app`, opened and closed by the lifespan."""

    service: str
    settings: ServiceSettings
    broker: KafkaBroker
    metrics: Metrics
    consumer: EventConsumer
    topics: Topics
    pool: asyncpg.Pool | None = None
    ready: bool = False
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    # Extra readiness checks a service adds (meetings: a Graph token is obtainable); each
    # raises when the service cannot do its work.
    ready_checks: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)
    # Gauges read from the database when /metrics is scraped (consent: the ledger head).
    on_scrape: list[Hook] = field(default_factory=list)
    # Topics of the service's own configuration, created at start beside the system's (booking:
    # each declared partner's request and reply topics).
    extra_topics: list[str] = field(default_factory=list)
    # The service's part of a person's data, answered on the admin port (personal_data.py).
    personal_data: Collect | None = None
    _periodic: PeriodicMetrics | None = None
    # With tracing on (visio_runtime.tracing): where spans go; the tracer a no-op without.
    tracer_provider: TracerProvider | None = None
    tracer: Tracer = tracing.NO_TRACER
    # Set by `serve`, in a service's own process: once started, the heap is set aside from the
    # garbage collector (visio_runtime.heap); not in a test's process, which starts many apps.
    settle_heap: bool = False

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "the pool opens in the lifespan"
        return self.pool

    def run_every(self, task: str, interval_s: float, round_: Round) -> None:
        """Do `round_` every `interval_s` seconds for as long as the service runs, failures
        logged, counted and tried again (visio_runtime.periodic)."""
        counts = self._periodic or PeriodicMetrics(self.metrics)
        self._periodic = counts
        self.run_in_background(lambda: every(task, interval_s, round_, counts), task)

    def run_in_background(self, make: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run a loop for as long as the service runs (started after the broker, cancelled
        before it stops)."""

        async def start(_: Runtime) -> None:
            self.background.append(asyncio.create_task(make(), name=name))

        self.on_start.append(start)


def build_runtime(
    service: str, settings: ServiceSettings, *, span_exporter: tracing.SpanExporter | None = None
) -> Runtime:
    """`span_exporter`: where spans go instead of the settings' exporter (tests)."""
    defects.refuse_in_production()  # a service broken on purpose never starts there
    metrics = Metrics(service)
    metrics.gauge(
        "production_waivers",
        "Production checks not enforced (VISIO_PRODUCTION_LOCAL_BROKER_WAIVER): 0 on a real "
        "deployment.",
    ).set(len(settings.waived_production_checks))
    middlewares: list[Any] = [publish_metrics(metrics)]
    provider = tracing.tracer_provider(settings, service, span_exporter)
    tracer = tracing.NO_TRACER
    if provider is not None:
        middlewares.append(tracing.telemetry_middleware(provider))
        tracer = provider.get_tracer(f"visio_rdv.{service}")
    broker = make_broker(settings, client_id=f"visio-rdv-{service}", middlewares=middlewares)
    consumer = EventConsumer(service, settings, broker, metrics, tracer=tracer)
    runtime = Runtime(
        service=service,
        settings=settings,
        broker=broker,
        metrics=metrics,
        consumer=consumer,
        topics=Topics(settings.topic_prefix),
        tracer_provider=provider,
        tracer=tracer,
    )
    if provider is not None:

        async def flush_spans(_: Runtime) -> None:
            provider.shutdown()

        runtime.on_stop.append(flush_spans)
    return runtime


def create_service_app(runtime: Runtime, title: str, **fastapi_kwargs: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settings = runtime.settings
        runtime.pool = await create_pool(
            settings.database_url.get_secret_value(),
            schema=runtime.service,
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
        )
        try:
            await ensure_topics(settings, runtime.topics.all() + runtime.extra_topics)
            await start_broker(runtime.broker)
            for hook in runtime.on_start:
                await hook(runtime)
            if runtime.settle_heap:
                heap.settle()
            runtime.ready = True
            log.info("%s ready", runtime.service)
            yield
        finally:
            runtime.ready = False
            for task in runtime.background:
                task.cancel()
            await asyncio.gather(*runtime.background, return_exceptions=True)
            await runtime.consumer.drain()
            for hook in runtime.on_stop:
                await hook(runtime)
            await runtime.broker.stop()
            await runtime.pool.close()

    # The public app publishes no documentation: the admin app serves it (its schema is still
    # the public app's, `app.openapi()`, which booking's committed openapi.json comes from).
    app = FastAPI(
        title=title,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        **fastapi_kwargs,
    )
    app.state.runtime = runtime
    app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics(runtime.metrics))
    app.add_middleware(SecurityHeaders, hsts=runtime.settings.environment == "production")
    if runtime.tracer_provider is not None:
        tracing.instrument_app(app, runtime.tracer_provider)
    add_health_routes(app, runtime)
    app.state.admin = create_admin_app(runtime, app)
    return app


def add_health_routes(app: FastAPI, runtime: Runtime) -> None:
    """/health/live and /health/ready: on both ports, for probes on either network."""

    @app.get("/health/live", tags=["health"], summary="The process answers")
    async def live() -> dict[str, str]:
        # Which event loop serves it: `uvloop` when started as a service (`serve`).
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        return {"status": "ok", "event_loop": loop}

    @app.get(
        "/health/ready",
        tags=["health"],
        summary="Database and broker answer; says whether the consumer is assigned or waiting",
    )
    async def ready(response: Response) -> dict[str, Any]:
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(2):
                await runtime.db.fetchval("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        broker_ok = runtime.ready and await runtime.broker.ping(timeout=2)
        checks["kafka"] = "ok" if broker_ok else "error"
        for name, check in runtime.ready_checks.items():
            try:
                async with asyncio.timeout(5):
                    await check()
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"error: {type(exc).__name__}"
        healthy = all(value == "ok" for value in checks.values())
        response.status_code = 200 if healthy else 503
        # Waiting for an assignment is not a failure: a group rebalancing, or more replicas
        # than partitions, leaves a healthy consumer without partitions for a while.
        return {
            "status": "ok" if healthy else "unavailable",
            "checks": checks,
            "consumer": runtime.consumer.state(),
        }


def create_admin_app(runtime: Runtime, public: FastAPI) -> FastAPI:
    """The admin port's app: metrics, the public app's API documentation, health. It shares
    the public app's runtime (opened by the public app's lifespan)."""
    admin = FastAPI(
        title=f"{public.title} (admin)", docs_url=None, redoc_url=None, openapi_url=None
    )
    admin.state.runtime = runtime
    add_health_routes(admin, runtime)
    if runtime.personal_data is not None:
        add_personal_data_route(admin, lambda: runtime.db, runtime.personal_data)

    @admin.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        await runtime.consumer.observe()
        for hook in runtime.on_scrape:
            try:
                await hook(runtime)
            except Exception:  # a gauge left stale must not hide every other metric
                log.exception("%s: a metrics hook failed", runtime.service)
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)

    @admin.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(public.openapi())

    @admin.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=public.title)

    return admin


def configure_logging(
    level: str, service: str = "", fmt: str = "json", repeat_window_s: float = 60.0
) -> None:
    """Structured JSON lines on stderr (see visio_runtime.logs), or text with `fmt='text'`."""
    _configure_logging(level, service=service, fmt=fmt, repeat_window_s=repeat_window_s)


def announce_waivers(settings: ServiceSettings, service: str) -> None:
    """Production checks waived for a local broker: loud, at every start, in the log."""
    for finding in settings.waived_production_checks:
        logging.getLogger(f"visio.{service}.production").warning(waiver_warning(finding))


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    runtime: Runtime = app.state.runtime
    configure_logging(
        settings.log_level, runtime.service, settings.log_format, settings.log_repeat_window_s
    )
    announce_waivers(settings, runtime.service)
    heap.tune(settings.gc_young_threshold)
    runtime.settle_heap = True
    # log_config=None: uvicorn's records go through our handler too, instead of its own.
    public = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            log_config=None,
            ssl_certfile=settings.http_tls_certfile,
            ssl_keyfile=settings.http_tls_keyfile,
        )
    )
    admin = _QuietServer(
        uvicorn.Config(
            app.state.admin,
            host=settings.admin_host,
            port=settings.admin_port or settings.http_port + 1000,
            log_level="warning",
            log_config=None,
            lifespan="off",  # the public app's lifespan opens and closes the runtime
        )
    )
    # uvloop, as `uvicorn.run` would pick it: asyncio.run() here gave the default loop, whose
    # selector and transports in Python took a third of a service's CPU in the bench profile.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_both(public, admin))


async def _serve_both(public: uvicorn.Server, admin: uvicorn.Server) -> None:
    """The public server owns the signals and the lifespan; the admin one stops with it."""
    admin_task = asyncio.create_task(admin.serve())
    try:
        await public.serve()
    finally:
        admin.should_exit = True
        await admin_task


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the signals to the public one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
