"""The system's AsyncAPI document (shared/asyncapi.json): committed as the code generates it,
well formed (AsyncAPI 3.0: references resolve, operations name their channel's messages,
payload schemas are JSON Schema), complete (every topic, event type, consumer group and
dead-letter topic), and usable: a real event validates against its published schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from visio_deploy.asyncapi import DOCUMENT, generate, render
from visio_deploy.ops.topology import groups
from visio_shared import EVENT_TYPES, MeetingFailed, Topics
from visio_shared.booking_replies import PARTNER_REPLY_TYPES, AppointmentOutcome
from visio_shared.booking_requests import REQUEST_TYPES


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return generate()


def test_the_committed_document_is_what_the_code_generates() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render(), (
        "shared/asyncapi.json is out of date: run `uv run python -m visio_deploy.asyncapi`"
    )


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_the_document_is_well_formed_asyncapi_3(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    for ref in refs(doc):
        resolve(doc, ref)  # raises KeyError on a dangling reference
    for channel in doc["channels"].values():
        assert channel["address"] and channel["messages"]
    for name, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            # An operation's messages must be its channel's (AsyncAPI 3.0, operation object).
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), name
    for message in doc["components"]["messages"].values():
        assert "payload" in message
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft7Validator.check_schema(schema)  # AsyncAPI's default schema format
        assert schema.get("type") or schema.get("enum") or schema.get("anyOf"), name


def test_every_topic_event_and_consumer_group_is_there(doc: dict[str, Any]) -> None:
    addresses = {channel["address"] for channel in doc["channels"].values()}
    topics = Topics()
    assert set(topics.all()) | {topics.dlq("alerts")} <= addresses
    on_channels = [name for channel in doc["channels"].values() for name in channel["messages"]]
    # Each service confirms an erasure on its own topic (one producer per topic): that one
    # event type is on the three topics of the services that answer booking's request.
    on_each_answering_topic = {"PersonalDataErased": 3}
    for event_type in EVENT_TYPES:
        expected = on_each_answering_topic.get(event_type, 1)
        assert on_channels.count(event_type) == expected, f"{event_type} is on no topic, or on two"
    receiving = {
        group
        for operation in doc["operations"].values()
        if operation["action"] == "receive" and "bindings" in operation
        for group in operation["bindings"]["kafka"]["groupId"]["enum"]
    }
    # Booking's partner topics are configuration: their groups are those of a declared partner.
    partner_groups = {"visio-rdv.booking.booking-requests.{system}.v1"}
    shared_group = {"visio-rdv.booking.booking-requests.v1"}
    assert receiving == set(groups("visio-rdv")) | partner_groups | shared_group


def test_a_real_event_validates_against_its_published_schema(doc: dict[str, Any]) -> None:
    event = MeetingFailed(
        appointment_id=uuid.uuid4(), revision=2, correlation_id=uuid.uuid4(), reason="x"
    )
    message = doc["components"]["messages"]["MeetingFailed"]
    schema = {**message["payload"], "components": doc["components"]}
    jsonschema.Draft7Validator(schema).validate(event.model_dump(mode="json"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate({"event_type": "MeetingFailed"})


def test_each_partner_has_its_request_and_reply_channels(doc: dict[str, Any]) -> None:
    requests = doc["channels"]["booking-requests.{system}.v1"]
    replies = doc["channels"]["booking-replies.{system}.v1"]
    assert requests["address"] == "visio-rdv.booking-requests.{system}.v1"
    assert replies["address"] == "visio-rdv.booking-replies.{system}.v1"
    for channel in (requests, replies):
        assert set(channel["parameters"]) == {"system"}
    assert set(requests["messages"]) == set(REQUEST_TYPES)
    assert set(replies["messages"]) == set(PARTNER_REPLY_TYPES)
    receive = doc["operations"]["booking.receive.booking-requests.{system}.v1"]
    assert receive["bindings"]["kafka"]["groupId"]["enum"] == [
        "visio-rdv.booking.booking-requests.{system}.v1"
    ]
    assert "Deprecated" in doc["channels"]["booking-requests.v1"]["description"]


def test_an_outcome_and_a_request_without_its_caller_validate_as_published(
    doc: dict[str, Any],
) -> None:
    def schema_of(message: str) -> dict[str, Any]:
        payload = doc["components"]["messages"][message]["payload"]
        return {**payload, "components": doc["components"]}

    outcome = AppointmentOutcome(
        appointment_id=uuid.uuid4(),
        revision=3,
        correlation_id=uuid.uuid4(),
        calling_system="national-scheduler",
        outcome="a-value-added-later",  # the list is open: a partner must take it
    )
    jsonschema.Draft7Validator(schema_of("AppointmentOutcome")).validate(
        outcome.model_dump(mode="json")
    )
    cancel = {
        "request_id": "sched-1",
        "request_type": "CancelAppointment",
        "appointment_id": str(uuid.uuid4()),
        "payload": {"reason": "user"},
    }
    jsonschema.Draft7Validator(schema_of("CancelAppointment")).validate(cancel)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema_of("CancelAppointment")).validate(
            {**cancel, "calling_system": ""}
        )
