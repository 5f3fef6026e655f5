"""JSON Schemas of the events, and of what partner systems send booking and read back (the
requests, the replies, the appointments' outcomes), generated from the models:
`python -m visio_shared.schemas` writes them to shared/schemas/; a test fails when the committed
ones drift."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from visio_shared.booking_replies import PARTNER_REPLY_TYPES
from visio_shared.booking_requests import REQUEST_TYPES
from visio_shared.events import EVENT_TYPES

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def contract_models() -> dict[str, tuple[type[BaseModel], int]]:
    """Every message with a schema file: name → (model, version). Requests are versioned with
    their topic (`booking-requests.<system>.v1`), events and replies by their envelope."""
    models: dict[str, tuple[type[BaseModel], int]] = {
        name: (model, model.SCHEMA_VERSION) for name, model in EVENT_TYPES.items()
    }
    models |= {name: (model, 1) for name, model in REQUEST_TYPES.items()}
    models |= {name: (model, model.SCHEMA_VERSION) for name, model in PARTNER_REPLY_TYPES.items()}
    return models


def generate() -> dict[str, str]:
    """File name → JSON text, for every event type, request type and reply type. Requests are
    described as partners write them (validation), the rest as they are sent (serialization)."""
    out: dict[str, str] = {}
    for name, (model, version) in sorted(contract_models().items()):
        mode: Any = "validation" if name in REQUEST_TYPES else "serialization"
        schema: dict[str, Any] = model.model_json_schema(mode=mode)
        schema["$id"] = f"https://visio-rdv.caf.fr/schemas/{name}.v{version}.json"
        out[f"{name}.v{version}.json"] = (
            json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        )
    return out


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name, text in generate().items():
        (target / name).write_text(text, encoding="utf-8")
        print(f"wrote {target / name}")


if __name__ == "__main__":
    main()
