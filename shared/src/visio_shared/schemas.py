"""JSON Schemas of the events, generated from the models: `python -m visio_shared.schemas`
writes them to shared/schemas/; a test fails when the committed ones drift."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from visio_shared.events import EVENT_TYPES

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def generate() -> dict[str, str]:
    """File name → JSON text, for every event type."""
    out: dict[str, str] = {}
    for event_type, model in sorted(EVENT_TYPES.items()):
        schema: dict[str, Any] = model.model_json_schema(mode="serialization")
        schema["$id"] = (
            f"https://visio-rdv.caf.fr/schemas/{event_type}.v{model.SCHEMA_VERSION}.json"
        )
        out[f"{event_type}.v{model.SCHEMA_VERSION}.json"] = (
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
