"""`visio-rdv-alerts`: run the alerts service (settings from `ALERTS_*`). It runs its own
migration (schema `alerts`) at start, with an owner connection, then logs in as its role."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr
from visio_runtime.db import migrate, role_dsn
from visio_runtime.settings import load_settings

from visio_alerts.settings import AlertsSettings
from visio_alerts.store import SCHEMA


async def prepare(settings: AlertsSettings) -> AlertsSettings:
    """Run the schema's migration with the owner connection; the settings to run with."""
    if settings.owner_database_url is None:
        raise SystemExit("alerts: set VISIO_DATABASE_URL (an owner connection) for its migration")
    owner = settings.owner_database_url.get_secret_value()
    password = settings.database_password.get_secret_value()
    await migrate(owner, SCHEMA, password)
    dsn = role_dsn(owner, SCHEMA.service_role, password)
    return settings.model_copy(update={"database_url": SecretStr(dsn)})


def main() -> int:
    settings = asyncio.run(prepare(load_settings(AlertsSettings, "visio-rdv-alerts")))
    # Imported once the settings are accepted: a refused start needs none of it.
    from visio_runtime.service import serve

    from visio_alerts.app import create_app

    serve(create_app(settings), settings)
    return 0


if __name__ == "__main__":
    main()
