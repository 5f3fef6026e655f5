"""`visio-rdv migrate`: every service's numbered SQL files, roles and grants, with an owner
connection. Safe to run twice and from several replicas (advisory locks in visio_runtime.db).

Each service's role password is the operator's: `VISIO_<SERVICE>_DATABASE_PASSWORD`, or the file
named by `VISIO_<SERVICE>_DATABASE_PASSWORD_FILE` (a mounted secret). Migrate gives it to a role
it creates and never changes an existing role's password, unless asked with `--set-password
<service>` (a rotation). Without a secret, development uses the role's own name; production
(`VISIO_ENVIRONMENT=production`) refuses."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

from visio_runtime.db import migrate, role_dsn
from visio_runtime.production import ENVIRONMENT_ENV

from visio_deploy.stack import SERVICES


class MissingPassword(RuntimeError):
    """Production, and a service role without its own secret."""


def password_settings(name: str) -> tuple[str, str]:
    """The two environment variables a service role's password may come from."""
    variable = f"VISIO_{name.upper()}_DATABASE_PASSWORD"
    return variable, f"{variable}_FILE"


def service_password(name: str, env: Mapping[str, str] | None = None) -> str:
    """The role's password from its own secret; the role's name in development without one."""
    env = os.environ if env is None else env
    variable, file_variable = password_settings(name)
    if env.get(file_variable):
        return Path(env[file_variable]).read_text(encoding="utf-8").strip()
    if env.get(variable):
        return env[variable]
    if env.get(ENVIRONMENT_ENV) == "production":
        raise MissingPassword(
            f"{ENVIRONMENT_ENV}=production: set {variable} or {file_variable} "
            f"(visio_{name}'s own password)"
        )
    return f"visio_{name}"


def service_passwords(env: Mapping[str, str] | None = None) -> dict[str, str]:
    return {service.name: service_password(service.name, env) for service in SERVICES}


async def migrate_all(
    owner_dsn: str,
    passwords: Mapping[str, str] | None = None,
    set_passwords: Collection[str] = (),
) -> dict[str, list[str]]:
    """Migrate every service; `passwords` by service (default: from the environment), given to
    the roles created; `set_passwords` names the services whose existing role takes it too."""
    passwords = service_passwords() if passwords is None else passwords
    unknown = set(set_passwords) - {service.name for service in SERVICES}
    if unknown:
        raise ValueError(f"no such service: {', '.join(sorted(unknown))}")
    applied: dict[str, list[str]] = {}
    for service in SERVICES:
        applied[service.name] = await migrate(
            owner_dsn,
            service.schema(),
            passwords[service.name],
            set_password=service.name in set_passwords,
        )
    return applied


def service_dsns(owner_dsn: str, passwords: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each service's connection string: the owner's server and database, the service's role."""
    passwords = service_passwords() if passwords is None else passwords
    return {
        service.name: role_dsn(owner_dsn, f"visio_{service.name}", passwords[service.name])
        for service in SERVICES
    }
