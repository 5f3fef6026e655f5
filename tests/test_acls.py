"""ACLs as code (visio_deploy.acls): checked against the committed AsyncAPI document, read here
on its own terms, so a generator that drifted from the document — a missing right, an extra one,
a shared group — fails. What only a real cluster proves is in docs/kafka-acls.md."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

import pytest
from visio_deploy.acls import Acl, AclSettings, acls_of_document, system_acls
from visio_deploy.asyncapi import DOCUMENT, generate

PREFIX = "visio-rdv"
PARTNERS = ["caf-portal", "national-scheduler"]


def mismatches(document: dict[str, Any], acls: list[Acl], partners: list[str]) -> list[str]:
    """What the ACLs grant that the document's operations do not say, and the reverse.

    Read from the document directly: each `<actor>.send|receive.<channel>` operation, actor
    `partners` standing for each partner; a `{system}` address is the partner's own topic."""
    wanted: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for operation_id, operation in document["operations"].items():
        actor = operation_id.split(".")[0]
        channel_id = operation["channel"]["$ref"].removeprefix("#/channels/")
        address = document["channels"][channel_id]["address"]
        right = "Write" if operation["action"] == "send" else "Read"
        group = operation.get("bindings", {}).get("kafka", {}).get("groupId", {}).get("enum")
        names = partners if actor == "partners" else [actor]
        for name in names:
            own = [name] if actor == "partners" else partners
            topics = [address.replace("{system}", p) for p in own] if "{" in address else [address]
            for topic in topics:
                wanted[f"User:{name}"].add((right, "topic", topic))
                if right == "Write" and actor != "partners":
                    wanted[f"User:{name}"].add(("Create", "topic", topic))
            if right == "Read" and group:
                for p in own if "{system}" in group[0] else [None]:
                    its = group[0] if p is None else group[0].replace("{system}", p)
                    wanted[f"User:{name}"].add(("Read", "group", its))
            if right == "Read" and actor == "partners":
                wanted[f"User:{name}"].add(("Read", "group", f"{PREFIX}.partner.{name}"))
    granted: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for acl in acls:
        granted[acl.principal].add((acl.operation, acl.resource, acl.name))
    problems = []
    for principal in sorted(set(wanted) | set(granted)):
        for missing in sorted(wanted[principal] - granted[principal]):
            problems.append(f"{principal} lacks {missing}")
        for extra in sorted(granted[principal] - wanted[principal]):
            problems.append(f"{principal} is granted {extra}, which no operation says")
    return problems


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    committed: dict[str, Any] = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    return committed


def test_the_acls_match_the_asyncapi_document(document: dict[str, Any]) -> None:
    acls = system_acls(AclSettings(kafka_partners=PARTNERS))

    assert mismatches(document, acls, PARTNERS) == []
    principals = {acl.principal for acl in acls}
    assert principals == {
        "User:booking", "User:meetings", "User:notifications", "User:consent", "User:alerts",
        "User:ops", "User:caf-portal", "User:national-scheduler",
    }  # fmt: skip
    # Each principal its own consumer group, and no group shared by two principals.
    groups: dict[str, set[str]] = defaultdict(set)
    for acl in acls:
        if acl.resource == "group":
            groups[acl.name].add(acl.principal)
    assert all(len(holders) == 1 for holders in groups.values()), groups
    assert {
        "visio-rdv.booking.meetings.v1",
        "visio-rdv.booking.booking-requests.caf-portal.v1",
        "visio-rdv.partner.caf-portal",
    } <= set(groups)
    # Every send and every receive of the document has its ACL: counted from the document.
    # A send by the partners, or to a partner's own topic (`{system}`), is one per partner.
    writes = [acl for acl in acls if acl.operation == "Write"]
    expected = 0
    for name, op in document["operations"].items():
        if op["action"] != "send":
            continue
        channel = document["channels"][op["channel"]["$ref"].removeprefix("#/channels/")]
        per_partner = name.startswith("partners.") or "{system}" in channel["address"]
        expected += len(PARTNERS) if per_partner else 1
    assert len(writes) == expected
    # Never a wildcard, never a right the rules do not need.
    assert all("*" not in acl.name and acl.operation in ("Read", "Write", "Create") for acl in acls)


def test_a_drifted_acl_list_is_caught(document: dict[str, Any]) -> None:
    """Break it on purpose: one right removed, one added, a group shared: each is named."""
    acls = system_acls(AclSettings(kafka_partners=PARTNERS))
    write = next(acl for acl in acls if acl == Acl("User:booking", "Write", "topic",
                                                   "visio-rdv.appointments.v1"))  # fmt: skip
    assert mismatches(document, [acl for acl in acls if acl != write], PARTNERS) == [
        "User:booking lacks ('Write', 'topic', 'visio-rdv.appointments.v1')"
    ]
    extra = Acl("User:notifications", "Write", "topic", "visio-rdv.consents.v1")
    assert mismatches(document, [*acls, extra], PARTNERS) == [
        "User:notifications is granted ('Write', 'topic', 'visio-rdv.consents.v1'), which no "
        "operation says"
    ]
    shared = Acl("User:caf-portal", "Read", "group", "visio-rdv.partner.national-scheduler")
    assert mismatches(document, [*acls, shared], PARTNERS) != []
    # And a document operation that the ACLs forgot: consent reading its checkpoints back.
    forgotten = {**document, "operations": dict(document["operations"])}
    forgotten["operations"]["notifications.receive.consents.v1"] = {
        "action": "receive", "channel": {"$ref": "#/channels/consents.v1"}
    }  # fmt: skip
    assert mismatches(forgotten, acls, PARTNERS) == [
        "User:notifications lacks ('Read', 'topic', 'visio-rdv.consents.v1')"
    ]


def test_a_partners_own_topics_are_its_alone() -> None:
    """Per-partner topics (`booking-requests.{system}.v1`) drop in: each partner writes and
    reads only its own; booking reads every partner's requests and writes every one's replies."""
    document = generate(PREFIX)
    for stream, writer, reader in (
        ("booking-requests.{system}.v1", "partners", "booking"),
        ("booking-replies.{system}.v1", "booking", "partners"),
    ):
        address = f"{PREFIX}.{stream}"
        document["channels"][stream] = {"address": address, "messages": {}}
        ref = {"$ref": f"#/channels/{stream}"}
        document["operations"][f"{writer}.send.{stream}"] = {"action": "send", "channel": ref}
        receive: dict[str, Any] = {"action": "receive", "channel": ref}
        if reader == "booking":
            receive["bindings"] = {"kafka": {"groupId": {"enum": [f"{PREFIX}.booking"]}}}
        document["operations"][f"{reader}.receive.{stream}"] = receive

    acls = acls_of_document(document, PREFIX, PARTNERS)

    assert mismatches(document, acls, PARTNERS) == []
    own = {(a.operation, a.name) for a in acls if a.principal == "User:caf-portal"}
    assert ("Write", "visio-rdv.booking-requests.caf-portal.v1") in own
    assert ("Read", "visio-rdv.booking-replies.caf-portal.v1") in own
    assert not any("national-scheduler" in name for _, name in own)
    booking = {(a.operation, a.name) for a in acls if a.principal == "User:booking"}
    for partner in PARTNERS:
        assert ("Read", f"visio-rdv.booking-requests.{partner}.v1") in booking
        assert ("Write", f"visio-rdv.booking-replies.{partner}.v1") in booking


def test_the_command_prints_kafka_acls_invocations_with_the_settings_partners() -> None:
    env = {"BOOKING_PARTNERS": '["caf-portal"]', "PATH": "/usr/bin:/bin"}
    printed = subprocess.run(
        [sys.executable, "-m", "visio_deploy", "ops", "acls", "--bootstrap-server", "k:9093"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    invocations = [line for line in printed.splitlines() if line.startswith("kafka-acls.sh ")]
    assert printed.startswith("#!/bin/sh\n")
    assert len(invocations) == len(system_acls(AclSettings(kafka_partners=["caf-portal"])))
    assert (
        "kafka-acls.sh --bootstrap-server k:9093 --command-config /etc/kafka/admin.properties "
        "--add --allow-principal User:caf-portal --operation Write "
        "--topic visio-rdv.booking-requests.v1 --resource-pattern-type literal"
    ) in invocations
    assert all("--resource-pattern-type literal" in line for line in invocations)
