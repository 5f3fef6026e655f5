"""The committed OpenAPI document is the code's: regenerate it when the API changes."""

from __future__ import annotations

import json

from visio_booking.openapi import COMMITTED, render


def test_the_committed_openapi_document_matches_the_code() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(), (
        "services/booking/openapi.json drifted; run: uv run python -m visio_booking.openapi"
    )


def test_request_bodies_and_problems_are_described() -> None:
    document = json.loads(render())
    schemas = document["components"]["schemas"]
    for path, method, body in [
        ("/v1/appointments", "post", "BookingRequest"),
        ("/v1/appointments/{appointment_id}/reschedule", "post", "RescheduleRequest"),
        ("/v1/appointments/{appointment_id}/cancel", "post", "CancelRequest"),
        ("/v1/appointments/{appointment_id}/contact", "patch", "ContactCorrection"),
        ("/v1/appointments/{appointment_id}/reassign", "post", "ReassignRequest"),
    ]:
        operation = document["paths"][path][method]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{body}" and body in schemas
        assert "Idempotency-Key" in {parameter["name"] for parameter in operation["parameters"]}
        problem = operation["responses"]["422"]["content"]["application/problem+json"]
        assert problem["schema"]["$ref"] == "#/components/schemas/ProblemDocument"
    # Every reference resolves inside the document.
    refs = {part.split('"')[0] for part in json.dumps(document).split('"$ref": "')[1:]}
    assert {ref.rsplit("/", 1)[-1] for ref in refs} <= set(schemas)
