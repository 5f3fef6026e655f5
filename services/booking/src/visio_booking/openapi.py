"""The OpenAPI document, published at /openapi.json and committed as services/booking/openapi.json.

Request bodies are validated by hand (with the service's rules as context), so FastAPI does not
see their models: they are added to the components here. `python -m visio_booking.openapi`
rewrites the committed copy; a test fails when it drifts from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from visio_shared.booking_requests import (
    BookingRequest,
    CancelRequest,
    ContactCorrection,
    ReassignRequest,
    RescheduleRequest,
)

from visio_booking.contract import ErasureRequest, ProblemDocument

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"
# Bodies FastAPI does not see: the requests, and the problem documents of errors.
COMPONENTS: tuple[type[BaseModel], ...] = (
    ProblemDocument,
    BookingRequest,
    RescheduleRequest,
    CancelRequest,
    ContactCorrection,
    ReassignRequest,
    ErasureRequest,
)
REF = "#/components/schemas/{model}"


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The `openapi_extra` of an endpoint whose body is `model`."""
    content = {"application/json": {"schema": ref(model)}}
    return {"requestBody": {"required": True, "content": content}}


def component_schemas() -> dict[str, Any]:
    _, top = models_json_schema([(model, "validation") for model in COMPONENTS], ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    return schemas


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # cached by FastAPI in app.openapi_schema
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                component_schemas()
            )
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def render() -> str:
    from visio_booking.app import create_app

    document = create_app().openapi()
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else COMMITTED
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
