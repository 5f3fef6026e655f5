"""Every service's registry carries the standard process and Python metrics, and its HTTP server
counts and times each answer by route template and status — never by raw path."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from visio_runtime.metrics import Metrics
from visio_runtime.service import build_runtime, create_service_app
from visio_runtime.settings import ServiceSettings


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def test_every_registry_has_process_and_python_runtime_metrics() -> None:
    found = families(Metrics("booking").render())
    for name in (
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections",
    ):
        assert found.get(name), name
    # Two runtimes in one process each have their own: nothing is registered twice.
    assert "process_cpu_seconds" in families(Metrics("meetings").render())


async def test_http_answers_are_counted_by_route_template_and_status() -> None:
    rt = build_runtime("booking", ServiceSettings(topic_prefix="http-metrics"))
    app = create_service_app(rt, title="probe")

    @app.get("/v1/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        if thing_id == "broken":
            raise RuntimeError("a bug")
        return {"id": thing_id}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://booking") as client:
        for thing_id in ("a1", "b2", "c3"):
            assert (await client.get(f"/v1/things/{thing_id}")).status_code == 200
        assert (await client.get("/v1/things/broken")).status_code == 500
        assert (await client.get("/wp-admin/install.php")).status_code == 404
        assert (await client.get("/health/live")).status_code == 200

    found = families(rt.metrics.render())
    requests = {
        (labels["method"], labels["route"], labels["status"]): value
        for name, labels, value in found["visio_http_requests"]
        if name == "visio_http_requests_total"
    }
    assert requests == {
        ("GET", "/v1/things/{thing_id}", "200"): 3,
        ("GET", "/v1/things/{thing_id}", "500"): 1,
        ("GET", "unmatched", "404"): 1,
        ("GET", "/health/live", "200"): 1,
    }
    counts = {
        labels["route"]: value
        for name, labels, value in found["visio_http_request_duration_seconds"]
        if name == "visio_http_request_duration_seconds_count"
    }
    assert counts["/v1/things/{thing_id}"] == 4
    assert [v for _, _, v in found["visio_http_requests_in_progress"]] == [0]
