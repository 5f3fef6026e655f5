"""`visio-rdv migrate`: every service's numbered SQL files, roles and grants, with an owner
connection. Safe to run twice and from several replicas (advisory locks in visio_runtime.db)."""

from __future__ import annotations

from visio_runtime.db import migrate, role_dsn

from visio_deploy.stack import SERVICES


def service_password(name: str, secret_seed: str | None) -> str:
    """Dev passwords are the role's name; production passes real ones (VISIO_DB_PASSWORD_SEED
    or each service's own DATABASE_URL)."""
    role = f"visio_{name}"
    return role if not secret_seed else f"{role}-{secret_seed}"


async def migrate_all(owner_dsn: str, secret_seed: str | None = None) -> dict[str, list[str]]:
    applied: dict[str, list[str]] = {}
    for service in SERVICES:
        applied[service.name] = await migrate(
            owner_dsn, service.schema(), service_password(service.name, secret_seed)
        )
    return applied


def service_dsns(owner_dsn: str, secret_seed: str | None = None) -> dict[str, str]:
    """Each service's connection string: the owner's server and database, the service's role."""
    return {
        service.name: role_dsn(
            owner_dsn, f"visio_{service.name}", service_password(service.name, secret_seed)
        )
        for service in SERVICES
    }
