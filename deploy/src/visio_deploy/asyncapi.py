"""The AsyncAPI 3.0 document of the whole system, for other Caf systems and for operations:
every topic, who produces it, who consumes it (group and the event types it handles), the
payload schemas, the headers, and the dead-letter topics.

`python -m visio_deploy.asyncapi` writes it to shared/asyncapi.json; tests/test_asyncapi.py
fails when the committed one differs from what the code gives.

Generated from the code, not from FastStream's own per-broker document: the services' Kafka
subscribers take raw records (the shared consumer parses them) and publish through
`broker.publish`, so FastStream would describe every payload as "bytes". Here payloads come
from the contract models in visio_shared (and the two service models that travel on a topic),
consumers from the services' apps as their factories wire them (visio_deploy.ops.topology), and
producers from the table below — the one fact the code does not declare anywhere.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from visio_consent.checkpoints import EVENT_TYPE as CHECKPOINT
from visio_consent.signing import Checkpoint
from visio_runtime.settings import ServiceSettings
from visio_shared import EVENT_TYPES, Headers, Topics
from visio_shared.booking_requests import (
    CALLING_SYSTEM_HEADER,
    PARTNER_REPLY_TYPES,
    REPLY_TYPES,
    REQUEST_ID_HEADER,
    REQUEST_TYPES,
)
from visio_shared.topics import PARTNER_REPLIES, PARTNER_REQUESTS

from visio_deploy.ops.dlq import REPLAY_OF
from visio_deploy.ops.topology import replays_topic, subscriptions

DOCUMENT = Path(__file__).resolve().parents[3] / "shared" / "asyncapi.json"
KAFKA_BINDING = "0.5.0"
# A partner's topics are one channel each, their address a parameter (AsyncAPI 3.0).
SYSTEM = "{system}"
SYSTEM_PARAMETER = {
    "system": {
        "description": "The partner system, as booking's configuration declares it "
        "(BOOKING_PARTNERS) and its broker principal is named: lower-case letters, digits and "
        "inner hyphens. Only that principal may write its request topic and read its reply "
        "topic (docs/partners.md).",
        "examples": ["caf-portal", "national-scheduler"],
    }
}


@dataclass(frozen=True)
class Stream:
    name: str  # the `Topics` property
    producer: str
    messages: dict[str, type[BaseModel]]  # message name (its event or request type) → payload
    key: str
    summary: str
    routed: bool = True  # envelope events routed by event_type (else: requests, checkpoints)
    # A partner's own topic (`<prefix>.<partner stream>.{system}.v1`): its address is a
    # parameter, and booking's receiving is its configuration's, not its code's.
    partner_stream: str | None = None

    def address(self, topics: Topics) -> str:
        if self.partner_stream is not None:
            return f"{topics.prefix}.{self.partner_stream}.{SYSTEM}.v1"
        address: str = getattr(topics, self.name)
        return address


def _events(*names: str) -> dict[str, type[BaseModel]]:
    return {name: EVENT_TYPES[name] for name in names}


STREAMS = (
    Stream(
        "booking_requests",
        "partners",
        dict(REQUEST_TYPES),
        "the request id for a new booking, the appointment id for a change",
        "Deprecated: the shared request topic of old, where the caller is whatever the "
        "message's calling_system says. Read only while booking's BOOKING_SHARED_REQUESTS_TOPIC "
        "is on (off by default), each message counted in "
        "booking_shared_topic_requests_total; answered on booking-replies.v1. Partners write "
        "their own booking-requests.{system}.v1 (docs/partners.md).",
        routed=False,
    ),
    Stream(
        "booking_replies",
        "booking",
        dict(REPLY_TYPES),
        "the calling system",
        "Deprecated with booking-requests.v1: the answers to the requests on it, keyed by the "
        "calling system, which every reader of this topic sees.",
    ),
    Stream(
        "partner_requests",
        "partners",
        dict(REQUEST_TYPES),
        "the request id for a new booking, the appointment id for a change",
        "One partner system's requests: book, reschedule, cancel, correct, reassign. The topic "
        "names the caller (only the partner's principal may write it): calling_system may be "
        "left out, and one naming another system is refused (403). Each request is answered "
        "on the partner's booking-replies.{system}.v1.",
        routed=False,
        partner_stream=PARTNER_REQUESTS,
    ),
    Stream(
        "partner_replies",
        "booking",
        dict(PARTNER_REPLY_TYPES),
        "the appointment id (a reply that concerns none: the request id)",
        "What one partner system reads, and it alone: the answer to each of its requests "
        "(accepted, with the appointment id, or rejected, with the field errors the HTTP API "
        "would give), and the outcome of every appointment it created each time it changes "
        "(AppointmentOutcome: an open list of values, with revision and time).",
        partner_stream=PARTNER_REPLIES,
    ),
    Stream(
        "appointments",
        "booking",
        _events(
            "AppointmentRequested",
            "AppointmentRescheduled",
            "AppointmentCancelled",
            "ContactCorrected",
            "ContactCorrectionRequested",
            "AdvisorReassigned",
            "AppointmentLinkRequested",
            "AdvisorOutcomeReported",
            "PersonalDataErasureRequested",
        ),
        "the appointment id",
        "Every appointment's life, in order: booked, rescheduled, cancelled, corrected; how "
        "it went, in the words of its advisor signed in; "
        "the person's requests, from a self-service page, for its email again or to confirm a "
        "new address before it replaces theirs; and the "
        "erasure of what every service holds about the person (ids only).",
    ),
    Stream(
        "meetings",
        "meetings",
        _events(
            "MeetingReady",
            "MeetingRescheduled",
            "MeetingCancelled",
            "MeetingFailed",
            "MeetingAttendanceRecorded",
            "MeetingAttendanceUnavailable",
            "MeetingRecordingAvailable",
            "PersonalDataErased",
        ),
        "the appointment id",
        "The Teams meeting of each appointment, or why there is none.",
    ),
    Stream(
        "notifications",
        "notifications",
        _events("NotificationSent", "NotificationFailed", "SmsFailed", "PersonalDataErased"),
        "the appointment id",
        "Each email sent to the person, or why it could not be; each text message that could "
        "never reach them.",
    ),
    Stream(
        "consents",
        "consent",
        _events("ConsentRecorded", "RecordingConsentWithdrawn", "PersonalDataErased"),
        "the appointment id",
        "What the consent ledger recorded (pseudonymous: never an email address).",
    ),
    Stream(
        "consent_checkpoints",
        "consent",
        {CHECKPOINT: Checkpoint},
        "`consent-ledger` (one partition's order for all checkpoints)",
        "Signed checkpoints of the consent ledger's hash chain (Ed25519 over seq and head hash).",
        routed=False,
    ),
)


# What is read beyond the apps' subscribers, which `subscriptions` cannot see:
# (reader, stream, summary). The ACLs (visio_deploy.acls) are made from these operations too.
READS_BEYOND_THE_APPS = (
    (
        "partners",
        "booking_replies",
        "Each partner system reads the answers to its requests (its own principal, and its own "
        "consumer group `<prefix>.partner.<system>`)",
    ),
    (
        "consent",
        "consents",
        "consent reads its own events back, from the beginning and without a group, to "
        "check the ledger's unsigned tail (`visio-rdv consent verify`)",
    ),
    (
        "consent",
        "consent_checkpoints",
        "consent reads its signed checkpoints back, without a group, to verify the ledger",
    ),
)


def generate(prefix: str = "visio-rdv") -> dict[str, Any]:
    topics = Topics(prefix)
    partitions = ServiceSettings.model_fields["topic_partitions"].default
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    by_address: dict[str, Stream] = {}

    for stream in STREAMS:
        address = stream.address(topics)
        by_address[address] = stream
        channel = _channel_id(address, prefix)
        headers = "EventHeaders" if stream.routed else _headers_of(stream)
        for name in stream.messages:
            messages[name] = _message(name, stream, headers)
        channels[channel] = _channel(address, stream.summary, list(stream.messages), partitions)
        if stream.partner_stream is not None:
            channels[channel]["parameters"] = SYSTEM_PARAMETER
        operations[f"{stream.producer}.send.{channel}"] = _operation(
            "send", channel, list(stream.messages), f"{stream.producer} publishes", None
        )
    # What booking reads by configuration rather than code: each declared partner's topic, and
    # the shared topic of old while the setting says so.
    named = {stream.name: stream for stream in STREAMS}
    for name, summary in (
        ("partner_requests", "booking consumes each declared partner's topic, one client each"),
        ("booking_requests", "booking consumes while BOOKING_SHARED_REQUESTS_TOPIC is on"),
    ):
        address = named[name].address(topics)
        channel = _channel_id(address, prefix)
        # One client per topic, each in a group of its own (visio_runtime.consumer `separately`).
        group = f"{topics.group('booking')}.{address.removeprefix(prefix + '.')}"
        operations[f"booking.receive.{channel}"] = _operation(
            "receive", channel, list(named[name].messages), summary, group
        )

    named = {stream.name: stream for stream in STREAMS}
    dead_letter_services: list[str] = []
    for subscription in subscriptions(prefix):
        for address in subscription.topics:
            stream = by_address[address]
            names = [
                name
                for name in stream.messages
                if not stream.routed or name in subscription.handled
            ]
            channel = _channel_id(address, prefix)
            operations[f"{subscription.service}.receive.{channel}"] = _operation(
                "receive",
                channel,
                names,
                f"{subscription.service} consumes (other event types are skipped)",
                subscription.group,
            )
        if subscription.service not in dead_letter_services:
            dead_letter_services.append(subscription.service)

    for reader, name, summary in READS_BEYOND_THE_APPS:
        channel = _channel_id(getattr(topics, name), prefix)
        operations[f"{reader}.receive.{channel}"] = _operation(
            "receive", channel, list(named[name].messages), summary, None
        )

    messages["DeadLetter"] = _dead_letter_message()
    for service in dead_letter_services:
        address = topics.dlq(service)
        channel = _channel_id(address, prefix)
        channels[channel] = _channel(
            address,
            f"What {service} could not process: the original message, unchanged, with why. "
            "Operations list, show and replay them (`visio-rdv ops dlq`).",
            ["DeadLetter"],
            partitions,
            dead_letters=True,
        )
        operations[f"{service}.send.{channel}"] = _operation(
            "send", channel, ["DeadLetter"], f"{service} dead-letters", None
        )
    messages["Replay"] = _replay_message()
    channel = _channel_id(replays_topic(prefix), prefix)
    channels[channel] = {
        "address": replays_topic(prefix),
        "description": "The ledger of dead letters replayed (compacted), so none is replayed "
        "twice.",
        "messages": {"Replay": {"$ref": "#/components/messages/Replay"}},
        "bindings": {"kafka": {"partitions": 1, "bindingVersion": KAFKA_BINDING}},
    }
    operations[f"ops.send.{channel}"] = _operation(
        "send", channel, ["Replay"], "`visio-rdv ops dlq replay` records each replay", None
    )

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Visio RDV",
            "version": "1.0.0",
            "description": (
                "Video appointments with a Caf advisor: the services' Kafka contract. Topics are "
                "`<prefix>.<stream>.v<N>` (prefix `visio-rdv`); one appointment's events share "
                "its id as key, so they keep their order. Contracts change additively; a "
                "breaking change is a new event type or a new topic version."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "kafka:9092",
                "protocol": "kafka-secure",
                "description": "Apache Kafka; SASL/SCRAM over TLS (the services' KAFKA_* "
                "settings).",
            },
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "`visio-rdv up`: the embedded tansu broker.",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": _schemas(STREAMS),
        },
    }


def _channel_id(address: str, prefix: str) -> str:
    return address.removeprefix(f"{prefix}.")


def _channel(
    address: str,
    description: str,
    names: list[str],
    partitions: int,
    dead_letters: bool = False,
) -> dict[str, Any]:
    field = "dlq_retention_days" if dead_letters else "topic_retention_days"
    retention_days = ServiceSettings.model_fields[field].default
    return {
        "address": address,
        "description": description,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
        "bindings": {
            "kafka": {
                "partitions": partitions,
                "topicConfiguration": {"retention.ms": int(retention_days * 86_400_000)},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _operation(
    action: str, channel: str, names: list[str], summary: str, group: str | None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in names],
    }
    if group is not None:
        operation["bindings"] = {
            "kafka": {
                "groupId": {"type": "string", "enum": [group]},
                "bindingVersion": KAFKA_BINDING,
            }
        }
    return operation


def _message(name: str, stream: Stream, headers: str) -> dict[str, Any]:
    model = stream.messages[name]
    return {
        "name": name,
        "title": name,
        "summary": (model.__doc__ or name).strip().splitlines()[0],
        "contentType": "application/json",
        "headers": {"$ref": f"#/components/schemas/{headers}"},
        "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"Key: {stream.key}."},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _headers_of(stream: Stream) -> str:
    requests = ("booking_requests", "partner_requests")
    return "RequestHeaders" if stream.name in requests else "CheckpointHeaders"


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "DeadLetter",
        "title": "Dead letter",
        "summary": "The original message (key, value and headers unchanged) and why it failed.",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {"description": "The original value, byte for byte (often not valid JSON)."},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original key."},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _replay_message() -> dict[str, Any]:
    return {
        "name": "Replay",
        "title": "Replay of a dead letter",
        "payload": {
            "type": "object",
            "properties": {
                "replayed_at": {"type": "string", "format": "date-time"},
                "to": {"type": "string", "description": "<topic>/<partition>/<offset>"},
                "by": {"type": "string", "description": "The operator's login."},
            },
            "required": ["replayed_at", "to", "by"],
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "<dlq topic>/<partition>/<offset>"},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _string(description: str, format: str | None = None) -> dict[str, str]:
    schema = {"type": "string", "description": description}
    if format:
        schema["format"] = format
    return schema


def _header_schemas() -> dict[str, Any]:
    event = {
        Headers.EVENT_ID: _string("The envelope's event_id.", "uuid"),
        Headers.EVENT_TYPE: _string("The envelope's event_type: how consumers route."),
        Headers.CORRELATION_ID: _string("The same across one appointment's story.", "uuid"),
        Headers.CAUSATION_ID: _string("The event_id of the event that caused this one.", "uuid"),
        Headers.SCHEMA_VERSION: _string("The envelope's schema_version."),
        Headers.CONTENT_TYPE: _string("application/json"),
        "traceparent": _string("W3C trace context, when tracing is on."),
    }
    dead_letter = {
        Headers.DLQ_SOURCE_TOPIC: _string("Where it was read."),
        Headers.DLQ_SOURCE_PARTITION: _string("Its partition there."),
        Headers.DLQ_SOURCE_OFFSET: _string("Its offset there."),
        Headers.DLQ_CONSUMER_GROUP: _string("The group that gave up."),
        Headers.DLQ_ERROR_CLASS: _string(
            "The exception's class: Unreadable (not JSON, no value, no event type), "
            "ValidationError (not the event it claims to be), Poison, or whatever a handler "
            "raised until its retries ran out."
        ),
        Headers.DLQ_REASON: _string("Why, readable; names the invalid fields."),
        Headers.DLQ_ATTEMPTS: _string("How many times it was tried."),
        Headers.DLQ_FIRST_FAILED_AT: _string("When it first failed.", "date-time"),
        Headers.DLQ_DEAD_LETTERED_AT: _string("When it was given up.", "date-time"),
    }
    cut = {
        Headers.DLQ_TRUNCATED: _string(
            "Only when the value (or key) was cut to fit on the broker: the original sizes. "
            "Such a letter is read, never replayed."
        )
    }
    required = [Headers.EVENT_ID, Headers.EVENT_TYPE, Headers.CORRELATION_ID]
    return {
        "EventHeaders": {"type": "object", "properties": event, "required": required},
        "RequestHeaders": {
            "type": "object",
            "properties": {
                REQUEST_ID_HEADER: _string("The request id, if the body cannot be read."),
                CALLING_SYSTEM_HEADER: _string(
                    "The calling system, likewise (on a partner's topic, if given, it must be "
                    "the topic's)."
                ),
                Headers.CONTENT_TYPE: _string("application/json"),
            },
        },
        "CheckpointHeaders": {
            "type": "object",
            "properties": {
                name: event[name]
                for name in (Headers.EVENT_ID, Headers.EVENT_TYPE, Headers.SCHEMA_VERSION)
            },
            "required": [Headers.EVENT_ID, Headers.EVENT_TYPE],
        },
        "DeadLetterHeaders": {
            "type": "object",
            "description": "The original headers, plus these (and, on a message replayed to "
            f"its source topic and failed again, `{REPLAY_OF}`).",
            "properties": {**event, **dead_letter, **cut},
            "required": list(dead_letter),
        },
    }


def _schemas(streams: tuple[Stream, ...]) -> dict[str, Any]:
    models = sorted(
        {model for stream in streams for model in stream.messages.values()},
        key=lambda model: model.__name__,
    )
    _, definitions = models_json_schema(
        [(model, "serialization") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    return {**dict(sorted(definitions["$defs"].items())), **_header_schemas()}


def render(prefix: str = "visio-rdv") -> str:
    return json.dumps(generate(prefix), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DOCUMENT
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
