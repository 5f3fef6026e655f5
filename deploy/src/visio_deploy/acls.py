"""ACLs as code: the Apache Kafka ACLs that make the topic rules true, made from the AsyncAPI
document's operations (`visio_deploy.asyncapi.generate`, itself made from the code), so the
rights and the published contract cannot drift apart.

- Each process has its own principal, `User:<process>` (booking, meetings, notifications,
  consent, alerts, ops): its `<P>KAFKA_SASL_USERNAME`.
- Each partner system has its own, `User:<partner>`, for every partner the settings declare
  (`VISIO_KAFKA_PARTNERS`, or booking's `BOOKING_PARTNERS`): an operation of the `partners`
  becomes one set of ACLs per partner. A channel whose address holds `{system}` (a partner's own
  topic) is expanded to that partner's topic for the partner itself, and to every partner's
  for the service on the other side.
- `send` → WRITE on the channel's topic (and, for a process, CREATE of that topic alone: the
  process that produces a topic may create it; a partner creates none). WRITE also grants the
  idempotent producer (Kafka ≥ 3.0, KIP-679).
- `receive` → READ on the topic; with a consumer group (the operation's `groupId` binding, or
  for a partner `<prefix>.partner.<name>`), READ on that group and no other. A receive without a
  group (consent reading its own topics back) needs no group ACL.

Nothing is a wildcard, nothing is `ALL`, and every pattern is LITERAL: whatever an operation
does not say is denied (`allow.everyone.if.no.acl.found=false` on the brokers).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from visio_deploy.asyncapi import generate

PARTNERS = "partners"
SYSTEM = "{system}"
Operation = Literal["Read", "Write", "Create"]
Resource = Literal["topic", "group"]


class AclSettings(BaseSettings):
    """What the ACLs depend on beyond the code: the topic prefix and the partner systems."""

    model_config = SettingsConfigDict(env_prefix="VISIO_", extra="ignore", populate_by_name=True)

    topic_prefix: str = Field(default="visio-rdv", description="The topics' prefix.")
    kafka_partners: list[str] = Field(
        default=[],
        validation_alias=AliasChoices("VISIO_KAFKA_PARTNERS", "BOOKING_PARTNERS"),
        description="The partner systems that write booking requests on Kafka, each with its "
        'own principal (a JSON list, e.g. ["caf-portal"]); booking\'s BOOKING_PARTNERS when unset.',
    )


@dataclass(frozen=True, order=True)
class Acl:
    principal: str  # User:<name>
    operation: Operation
    resource: Resource
    name: str

    def invocation(self, bootstrap: str, command_config: str) -> str:
        """The `kafka-acls` command that adds this ACL (Apache Kafka's CLI)."""
        return shlex.join(
            [
                "kafka-acls.sh",
                "--bootstrap-server",
                bootstrap,
                "--command-config",
                command_config,
                "--add",
                "--allow-principal",
                self.principal,
                "--operation",
                self.operation,
                f"--{self.resource}",
                self.name,
                "--resource-pattern-type",
                "literal",
            ]
        )


def partner_group(prefix: str, partner: str) -> str:
    """A partner's own consumer group: `<prefix>.partner.<partner>`."""
    return f"{prefix}.partner.{partner}"


def acls_of_document(document: dict[str, Any], prefix: str, partners: Iterable[str]) -> list[Acl]:
    """Every ACL the document's operations need, sorted, each once."""
    partners = list(partners)
    found: set[Acl] = set()
    for operation_id, operation in document["operations"].items():
        actor = operation_id.split(".", 1)[0]
        channel = _resolve(document, operation["channel"]["$ref"])
        address: str = channel["address"]
        group = _group_of(operation)
        if actor == PARTNERS:
            for partner in partners:
                topic = address.replace(SYSTEM, partner)
                own_group = group or partner_group(prefix, partner)
                # A partner never creates a topic: its topics are the deployment's to make.
                found |= _acls(f"User:{partner}", operation["action"], topic, own_group) - {
                    Acl(f"User:{partner}", "Create", "topic", topic)
                }
            continue
        # A partner's topic is read by a client of its own, in a group of its own: `{system}`
        # in the group too.
        each: list[str | None] = [*partners] if SYSTEM in address else [None]
        for system in each:
            topic = address if system is None else address.replace(SYSTEM, system)
            its_group = group if group is None or system is None else group.replace(SYSTEM, system)
            found |= _acls(f"User:{actor}", operation["action"], topic, its_group)
    return sorted(found)


def _acls(principal: str, action: str, topic: str, group: str | None) -> set[Acl]:
    if action == "send":
        return {Acl(principal, "Write", "topic", topic), Acl(principal, "Create", "topic", topic)}
    acls = {Acl(principal, "Read", "topic", topic)}
    if group is not None:
        acls.add(Acl(principal, "Read", "group", group))
    return acls


def _group_of(operation: dict[str, Any]) -> str | None:
    enum = operation.get("bindings", {}).get("kafka", {}).get("groupId", {}).get("enum")
    if enum is None:
        return None
    (group,) = enum
    return str(group)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def system_acls(settings: AclSettings | None = None) -> list[Acl]:
    """The ACLs of this deployment: the document as the code makes it, the settings' partners."""
    settings = settings or AclSettings()
    prefix = settings.topic_prefix
    return acls_of_document(generate(prefix), prefix, settings.kafka_partners)


def render(acls: Iterable[Acl], bootstrap: str, command_config: str) -> str:
    lines = [
        "#!/bin/sh",
        "# Visio RDV's Kafka ACLs, made from the AsyncAPI document (visio-rdv ops acls).",
        "# Run as the cluster's admin principal; brokers: allow.everyone.if.no.acl.found=false.",
        "set -eu",
    ]
    by_principal: dict[str, list[Acl]] = {}
    for acl in acls:
        by_principal.setdefault(acl.principal, []).append(acl)
    for principal, own in by_principal.items():
        lines.append(f"# {principal}")
        lines += [acl.invocation(bootstrap, command_config) for acl in own]
    return "\n".join(lines) + "\n"
