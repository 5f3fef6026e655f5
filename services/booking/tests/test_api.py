"""The HTTP API on real parts: PostgreSQL, and the outbox publishing to the test broker. Every
rule answers with a problem document naming the field; every change raises the revision and
leaves its event; callers see only their own appointments."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from visio_booking.keys import API_KEYS

PROBLEM = "https://visio-rdv.caf.fr/problems/"


def problem_of(answer: Any, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


def errors_of(answer: Any) -> dict[str, str]:
    body = problem_of(answer, 422)
    assert body["type"] == PROBLEM + "validation"
    return {error["field"]: error["message"] for error in body["errors"]}


def in_days(days: float, zone: str = "Europe/Paris") -> str:
    import zoneinfo

    moment = datetime.now(UTC) + timedelta(days=days)
    return moment.replace(microsecond=0).astimezone(zoneinfo.ZoneInfo(zone)).isoformat()


async def test_a_booking_is_stored_and_published_with_its_caller(booking: Any) -> None:
    answer = await booking.client.post(
        "/v1/appointments", json=booking.body(), headers=booking.auth()
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "requested" and answer.json()["revision"] == 1
    appointment_id = answer.json()["appointment_id"]

    topic = booking.runtime.topics.appointments
    records = await booking.records(
        topic, lambda got: any(r.key == appointment_id.encode() for r in got)
    )
    record = next(r for r in records if r.key == appointment_id.encode())
    headers = {name: value.decode() for name, value in record.headers}
    event = json.loads(record.value)
    assert headers["event_type"] == "AppointmentRequested"
    assert headers["event_id"] == event["event_id"]
    assert event["calling_system"] == "caf-portal" and event["consent"]["channel"] == "api"
    assert event["consent"]["recording_authorised"] is False

    view = await booking.view(appointment_id)
    assert view["status"] == "requested" and view["join_url"] is None
    assert view["calling_system"] == "caf-portal"
    assert view["start"].endswith(("+01:00", "+02:00")), "in the appointment's own zone"
    assert [entry["status"] for entry in view["history"]] == ["requested"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"start": in_days(-1)}, "start", "must be in the future"),
        ({"start": in_days(200)}, "start", "must be within 180 days"),
        ({"start": "2026-12-03T10:00:00"}, "start", "Input should have timezone info"),
        ({"duration_minutes": 5}, "duration_minutes", "must be between 10 and 120 minutes"),
        ({"duration_minutes": 500}, "duration_minutes", "must be between 10 and 120 minutes"),
        ({"duration_minutes": "30"}, "duration_minutes", "Input should be a valid integer"),
        ({"timezone": "Mars/Olympus"}, "timezone", "'Mars/Olympus' is not an IANA time zone"),
        # Found by `visio-rdv proof inputs`: a NUL reached PostgreSQL and answered 500.
        (
            {"user.first_name": "nul\u0000byte"},
            "user.first_name",
            "must not contain control characters",
        ),
        ({"start": in_days(3, "Indian/Reunion")}, "start", "does not match Europe/Paris"),
        (
            {"caf_code": "974", "timezone": "Europe/Paris"},
            "timezone",
            "Caf 974 (La Réunion) is in Indian/Reunion",
        ),
        ({"caf_code": "12"}, "caf_code", "String should match pattern"),
        ({"caf_code": "750"}, "caf_code", "unknown Caf code '750'"),
        (
            {"advisor": {"id": "a b", "display_name": "X"}},
            "advisor.id",
            "must be the advisor's Entra object id, a GUID",
        ),
        ({"advisor": {"id": "claire.martin@caf.fr", "display_name": "X"}}, "advisor.id", "GUID"),
        (
            {"advisor": {"id": "6f1c2a4e8b1d4c559a512f9e6f0c1d11", "display_name": "X"}},
            "advisor.id",
            "GUID",
        ),
        (
            {"advisor": {"id": "{6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11}", "display_name": "X"}},
            "advisor.id",
            "GUID",
        ),
        ({"subject": ""}, "subject", "String should have at least 1 character"),
        ({"colour": "blue"}, "colour", "unknown field"),
        ({"user.email": "not-an-email"}, "user.email", "value is not a valid email address"),
        ({"user.device": "fax"}, "user.device", "'computer', 'smartphone' or 'tablet'"),
        (
            {"consent.cgu_version": "0"},
            "consent.cgu_version",
            "unknown CGU version '0'; the current version is '1'",
        ),
        ({"consent.recording_authorised": None}, "consent.recording_authorised", "boolean"),
        ({"consent.recording_authorised": "yes"}, "consent.recording_authorised", "boolean"),
        ({"consent.recording_authorised": ...}, "consent.recording_authorised", "Field required"),
        (
            {"consent.accepted_at": in_days(1)},
            "consent.accepted_at",
            "cannot be in the future",
        ),
    ],
)
async def test_every_booking_rule_answers_a_problem_naming_the_field(
    booking: Any, change: dict[str, Any], field: str, message: str
) -> None:
    body = booking.body()
    for path, value in change.items():
        *parents, name = path.split(".")
        target = body
        for parent in parents:
            target = target[parent]
        if value is ...:
            del target[name]
        else:
            target[name] = value
    answer = await booking.client.post("/v1/appointments", json=body, headers=booking.auth())
    errors = errors_of(answer)
    assert message in errors[field], errors
    assert field in answer.json()["detail"]


@pytest.mark.parametrize(
    ("caf_code", "zone"),
    [
        ("971", "America/Guadeloupe"),
        ("972", "America/Martinique"),
        ("973", "America/Cayenne"),
        ("974", "Indian/Reunion"),
        ("976", "Indian/Mayotte"),
    ],
)
async def test_overseas_cafs_book_in_their_own_zone(booking: Any, caf_code: str, zone: str) -> None:
    body = booking.body(caf_code=caf_code, timezone=zone, start=in_days(5, zone))
    answer = await booking.client.post("/v1/appointments", json=body, headers=booking.auth())
    assert answer.status_code == 202, answer.text
    assert (await booking.view(answer.json()["appointment_id"]))["timezone"] == zone


async def test_malformed_oversized_and_unknown_requests_are_problems(booking: Any) -> None:
    client, auth = booking.client, booking.auth()
    missing = await client.get(f"/v1/appointments/{uuid.uuid4()}", headers=auth)
    assert problem_of(missing, 404)["type"] == PROBLEM + "not-found"
    assert problem_of(await client.post("/v1/appointments", content=b"{no", headers=auth), 400)
    huge = await client.post("/v1/appointments", content=b" " * 70_000, headers=auth)
    assert problem_of(huge, 413)["type"] == PROBLEM + "too-large"
    bad_id = await client.get("/v1/appointments/not-a-uuid", headers=auth)
    assert "path.appointment_id" in errors_of(bad_id)
    bad_key = await client.post(
        "/v1/appointments",
        json=booking.body(),
        headers=booking.auth(**{"Idempotency-Key": "k" * 256}),
    )
    assert errors_of(bad_key)["Idempotency-Key"] == "must be 1 to 255 printable ASCII characters"


HOSTILE_BODIES = {
    "nested 5,000 deep": (b"[" * 5_000, 400, "recursion limit exceeded"),
    "an object nested 3,000 deep": (b'{"a":' * 3_000 + b"1" + b"}" * 3_000, 400, "recursion"),
    "a byte-order mark": (b"\xef\xbb\xbf{}", 400, "byte-order mark"),
    "invalid UTF-8": (b'{"subject": "\xc3\x28"}', 400, "invalid unicode"),
    "empty": (b"", 400, "empty"),
    "null": (b"null", 422, "(body)"),
    "a list": (b"[]", 422, "(body)"),
}


@pytest.mark.parametrize("name", HOSTILE_BODIES)
async def test_a_body_that_is_not_a_request_is_a_problem_never_a_500(
    booking: Any, name: str
) -> None:
    body, status, said = HOSTILE_BODIES[name]
    appointment_id = await booking.book()
    for path in ("/v1/appointments", f"/v1/appointments/{appointment_id}/reschedule"):
        answer = await booking.client.post(path, content=body, headers=booking.auth())
        problem = problem_of(answer, status)
        assert said in problem["detail"], problem


async def test_a_key_given_twice_is_refused_naming_it(booking: Any) -> None:
    body = json.dumps(booking.body())[:-1] + ', "caf_code": "974"}'
    body = body.replace('"email": ', '"email": "x@example.fr", "email": ', 1)
    answer = await booking.client.post("/v1/appointments", content=body, headers=booking.auth())
    assert errors_of(answer) == {
        "caf_code": "given more than once",
        "user.email": "given more than once",
    }


async def test_a_body_past_the_limit_is_refused_before_it_is_read_whole(booking: Any) -> None:
    pulled = 0

    async def endless() -> Any:  # 100 MB, chunked: no Content-Length to refuse it by
        nonlocal pulled
        for _ in range(12_800):
            pulled += 1
            yield b" " * 8192

    answer = await booking.client.post(
        "/v1/appointments", content=endless(), headers=booking.auth()
    )
    assert problem_of(answer, 413)["detail"] == "the body exceeds 65536 bytes"
    assert pulled <= 10  # 64 KiB and one chunk more, not 100 MB
    declared = await booking.client.post(
        "/v1/appointments",
        content=b"{}",
        headers=booking.auth(**{"Content-Length": "1000000"}),
    )
    assert problem_of(declared, 413)


async def test_changes_raise_the_revision_and_publish_their_events_in_order(booking: Any) -> None:
    client, auth = booking.client, booking.auth()
    appointment_id = await booking.book()
    url = f"/v1/appointments/{appointment_id}"
    new_start = in_days(4)

    answers = [
        await client.post(f"{url}/reschedule", json={"start": new_start}, headers=auth),
        await client.patch(f"{url}/contact", json={"email": "jeanne.d@example.fr"}, headers=auth),
        await client.post(
            f"{url}/reassign",
            json={
                "advisor": {
                    "id": "0b7e4d2a-1c3f-4e5a-8d9b-6a2c1f0e3d44",
                    "display_name": "Paul Hoarau",
                }
            },
            headers=auth,
        ),
        await client.post(f"{url}/reschedule", json={"duration_minutes": 45}, headers=auth),
        await client.post(f"{url}/cancel", json={"reason": "user"}, headers=auth),
    ]
    assert [answer.status_code for answer in answers] == [202] * 5, [a.text for a in answers]
    assert [(a.json()["revision"], a.json()["status"]) for a in answers] == [
        (2, "requested"),
        (3, "requested"),
        (4, "requested"),
        (5, "requested"),
        (6, "cancelled"),
    ]

    view = await booking.view(appointment_id)
    assert view["revision"] == 6 and view["status"] == "cancelled"
    assert view["status_reason"] == "user" and view["duration_minutes"] == 45
    assert datetime.fromisoformat(view["start"]) == datetime.fromisoformat(new_start)
    assert view["advisor"] == {
        "id": "0b7e4d2a-1c3f-4e5a-8d9b-6a2c1f0e3d44",
        "display_name": "Paul Hoarau",
    }
    history = [(entry["status"], entry["revision"]) for entry in view["history"]]
    assert history == [
        ("requested", 1),
        ("rescheduled", 2),
        ("contact_corrected", 3),
        ("advisor_reassigned", 4),
        ("rescheduled", 5),
        ("cancelled", 6),
    ]
    assert view["history"][2]["detail"] == "email"  # what changed, never the address
    assert view["history"][5]["detail"] == "user, by caf-portal"

    key = appointment_id.encode()
    records = await booking.records(
        booking.runtime.topics.appointments,
        lambda got: sum(r.key == key for r in got) >= 6,
    )
    events = [json.loads(r.value) for r in records if r.key == key]
    assert [(e["event_type"], e["revision"]) for e in events] == [
        ("AppointmentRequested", 1),
        ("AppointmentRescheduled", 2),
        ("ContactCorrected", 3),
        ("AdvisorReassigned", 4),
        ("AppointmentRescheduled", 5),
        ("AppointmentCancelled", 6),
    ]
    assert {e["correlation_id"] for e in events} == {appointment_id}
    rescheduled, corrected, reassigned, lengthened, cancelled = events[1:]
    assert rescheduled["previous_duration_minutes"] == 30
    assert datetime.fromisoformat(rescheduled["start"]) == datetime.fromisoformat(new_start)
    assert corrected["user"]["email"] == "jeanne.d@example.fr"
    assert corrected["user"]["first_name"] == "Jeanne"
    assert reassigned["previous_advisor"]["id"] == events[0]["advisor"]["id"]
    assert reassigned["advisor"]["id"] == "0b7e4d2a-1c3f-4e5a-8d9b-6a2c1f0e3d44"
    assert lengthened["duration_minutes"] == 45 and lengthened["previous_duration_minutes"] == 30
    assert cancelled["reason"] == "user" and cancelled["cancelled_by"] == "caf-portal"


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        ("reschedule", {}, "(body)", "give a new start, a new duration_minutes, or both"),
        ("reschedule", {"start": in_days(-1)}, "start", "must be in the future"),
        ("reschedule", {"start": in_days(181)}, "start", "must be within 180 days"),
        ("reschedule", {"duration_minutes": 9}, "duration_minutes", "between 10 and 120"),
        ("reschedule", {"duration_minutes": 121}, "duration_minutes", "between 10 and 120"),
        (
            "reschedule",
            {"start": in_days(5, "America/Cayenne")},
            "start",
            "does not match Europe/Paris",
        ),
        ("reschedule", {"duration_minutes": 30}, "(body)", "the appointment is already at that"),
        ("reschedule", {"end": "tomorrow"}, "end", "unknown field"),
        ("cancel", {}, "reason", "Field required"),
        ("cancel", {"reason": "whim"}, "reason", "'user', 'advisor' or 'administrative'"),
        ("contact", {}, "(body)", "give at least one of first_name, last_name, email, device"),
        ("contact", {"email": "jeanne@"}, "email", "value is not a valid email address"),
        ("contact", {"device": "minitel"}, "device", "'computer', 'smartphone' or 'tablet'"),
        ("contact", {"first_name": "Jeanne"}, "(body)", "these are already the person's details"),
        ("reassign", {}, "advisor", "Field required"),
        (
            "reassign",
            {"advisor": {"id": "", "display_name": "X"}},
            "advisor.id",
            "must be the advisor's Entra object id, a GUID",
        ),
        (
            "reassign",
            # The same object id in capitals: the same advisor.
            {
                "advisor": {
                    "id": "6F1C2A4E-8B1D-4C55-9A51-2F9E6F0C1D11",
                    "display_name": "Claire Martin",
                }
            },
            "advisor.id",
            "is already the appointment's advisor",
        ),
    ],
)
async def test_every_change_rule_answers_a_problem_naming_the_field(
    booking: Any, path: str, body: dict[str, Any], field: str, message: str
) -> None:
    # The one appointment of this advisor in the module (an advisor's appointments never
    # overlap): the capitals case above names them.
    claire = {"id": "6f1c2a4e-8b1d-4c55-9a51-2f9e6f0c1d11", "display_name": "Claire Martin"}
    same = message == "is already the appointment's advisor"
    appointment_id = await (booking.book(advisor=claire) if same else booking.book())
    method = booking.client.patch if path == "contact" else booking.client.post
    answer = await method(
        f"/v1/appointments/{appointment_id}/{path}", json=body, headers=booking.auth()
    )
    assert message in errors_of(answer)[field]
    assert (await booking.view(appointment_id))["revision"] == 1, "a refusal changes nothing"


CHANGES = [
    ("post", "reschedule", {"duration_minutes": 60}),
    ("post", "cancel", {"reason": "advisor"}),
    ("patch", "contact", {"device": "tablet"}),
    (
        "post",
        "reassign",
        {"advisor": {"id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d69", "display_name": "Léa Payet"}},
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
async def test_a_cancelled_or_past_appointment_cannot_change(
    booking: Any, method: str, path: str, body: dict[str, Any]
) -> None:
    client, auth = booking.client, booking.auth()
    cancelled = await booking.book()
    assert (
        await client.post(
            f"/v1/appointments/{cancelled}/cancel", json={"reason": "user"}, headers=auth
        )
    ).status_code == 202
    answer = await getattr(client, method)(
        f"/v1/appointments/{cancelled}/{path}", json=body, headers=auth
    )
    problem = problem_of(answer, 409)
    assert problem["type"] == PROBLEM + "appointment-cancelled"
    assert "was cancelled on" in problem["detail"] and "(reason: user)" in problem["detail"]

    past = await booking.book()
    await booking.sql(
        "UPDATE appointments SET start_at = now() - interval '1 hour' WHERE appointment_id = $1",
        uuid.UUID(past),
    )
    answer = await getattr(client, method)(
        f"/v1/appointments/{past}/{path}", json=body, headers=auth
    )
    problem = problem_of(answer, 409)
    assert problem["type"] == PROBLEM + "appointment-past"
    assert "a past appointment cannot change" in problem["detail"]


async def test_a_repeated_booking_with_its_key_is_answered_once(booking: Any) -> None:
    client, key = booking.client, f"portal-{uuid.uuid4()}"
    subject = f"Idempotence {key}"
    body = booking.body(subject=subject)
    first = await client.post(
        "/v1/appointments", json=body, headers=booking.auth(**{"Idempotency-Key": key})
    )
    # Same JSON, other spacing and key order: the same request.
    again = await client.post(
        "/v1/appointments",
        content=json.dumps(dict(reversed(body.items())), indent=2).encode(),
        headers=booking.auth(**{"Idempotency-Key": key, "Content-Type": "application/json"}),
    )
    assert first.status_code == again.status_code == 202
    assert again.content == first.content, "the first answer, byte for byte"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers

    other = await client.post(
        "/v1/appointments",
        json={**body, "duration_minutes": 45},
        headers=booking.auth(**{"Idempotency-Key": key}),
    )
    problem = problem_of(other, 422)
    assert problem["type"] == PROBLEM + "idempotency-key-reused"
    assert problem["errors"] == [
        {"field": "Idempotency-Key", "message": "already used for a different request"}
    ]

    # Keys belong to their caller: another system's same key is another request (with an
    # advisor of its own: one advisor never has two appointments at once).
    theirs = await client.post(
        "/v1/appointments",
        json={**body, "advisor": {"id": str(uuid.uuid4()), "display_name": "Paul Hoarau"}},
        headers=booking.auth("advisor-tools", **{"Idempotency-Key": key}),
    )
    assert theirs.status_code == 202
    assert theirs.json()["appointment_id"] != first.json()["appointment_id"]

    rows = await booking.sql(
        "SELECT calling_system FROM appointments WHERE subject = $1 ORDER BY created_at", subject
    )
    assert [row["calling_system"] for row in rows] == ["caf-portal", "advisor-tools"]


async def test_twins_sent_at_once_take_effect_once(booking: Any) -> None:
    import asyncio

    key = f"twin-{uuid.uuid4()}"
    body = booking.body(subject=key)
    answers = await asyncio.gather(
        *(
            booking.client.post(
                "/v1/appointments", json=body, headers=booking.auth(**{"Idempotency-Key": key})
            )
            for _ in range(4)
        )
    )
    assert {answer.status_code for answer in answers} == {202}
    assert len({answer.json()["appointment_id"] for answer in answers}) == 1
    assert len(await booking.sql("SELECT 1 FROM appointments WHERE subject = $1", key)) == 1


@pytest.mark.parametrize(("method", "path", "body"), CHANGES)
async def test_a_repeated_change_with_its_key_takes_effect_once(
    booking: Any, method: str, path: str, body: dict[str, Any]
) -> None:
    appointment_id = await booking.book()
    url = f"/v1/appointments/{appointment_id}/{path}"
    headers = booking.auth(**{"Idempotency-Key": f"{path}-{appointment_id}"})
    first = await getattr(booking.client, method)(url, json=body, headers=headers)
    again = await getattr(booking.client, method)(url, json=body, headers=headers)
    assert first.status_code == again.status_code == 202, first.text
    assert again.json() == first.json() and first.json()["revision"] == 2
    assert again.headers["Idempotent-Replayed"] == "true"
    view = await booking.view(appointment_id)
    assert view["revision"] == 2 and len(view["history"]) == 2

    elsewhere = await getattr(booking.client, method)(
        f"/v1/appointments/{await booking.book()}/{path}", json=body, headers=headers
    )
    assert problem_of(elsewhere, 422)["type"] == PROBLEM + "idempotency-key-reused"


async def test_callers_need_a_key_with_the_scope(booking: Any) -> None:
    client = booking.client
    anonymous = await client.post("/v1/appointments", json=booking.body())
    assert problem_of(anonymous, 401)["type"] == PROBLEM + "unauthorized"
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    unknown = await client.post(
        "/v1/appointments", json=booking.body(), headers={"Authorization": "Bearer nope"}
    )
    assert problem_of(unknown, 401)["detail"] == "unknown or revoked API key"
    reader = await client.post(
        "/v1/appointments", json=booking.body(), headers=booking.auth("dashboard")
    )
    assert "appointments:write" in problem_of(reader, 403)["detail"]
    appointment_id = await booking.book()
    reader_cancels = await client.post(
        f"/v1/appointments/{appointment_id}/cancel",
        json={"reason": "user"},
        headers=booking.auth("dashboard"),
    )
    assert problem_of(reader_cancels, 403)["type"] == PROBLEM + "forbidden"


async def test_callers_see_and_change_only_their_own_appointments(booking: Any) -> None:
    client = booking.client
    mine = await booking.book("caf-portal")
    nobody = uuid.uuid4()

    for caller in ("advisor-tools", "dashboard"):
        theirs = await client.get(f"/v1/appointments/{mine}", headers=booking.auth(caller))
        absent = await client.get(f"/v1/appointments/{nobody}", headers=booking.auth(caller))
        # Exactly as if it did not exist: nothing tells another caller it is there.
        assert problem_of(theirs, 404)["title"] == problem_of(absent, 404)["title"]
        assert theirs.json()["detail"] == f"no appointment {mine}"
    changed = await client.post(
        f"/v1/appointments/{mine}/cancel",
        json={"reason": "user"},
        headers=booking.auth("advisor-tools"),
    )
    assert problem_of(changed, 404)["detail"] == f"no appointment {mine}"

    # The admin scope reads and changes everyone's.
    assert (await booking.view(mine, "ops"))["calling_system"] == "caf-portal"
    cancelled = await client.post(
        f"/v1/appointments/{mine}/cancel",
        json={"reason": "administrative"},
        headers=booking.auth("ops"),
    )
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    view = await booking.view(mine)
    assert view["history"][-1]["detail"] == "administrative, by ops"


async def test_a_revoked_key_stops_at_once_and_a_rotated_one_keeps_the_appointments(
    booking: Any,
) -> None:
    conn = await asyncpg.connect(booking.owner_dsn)
    try:
        old = await API_KEYS.create(
            conn, "national-scheduler", ["appointments:write", "appointments:read"]
        )
        booking.keys["old"] = old
        appointment_id = await booking.book("old")
        new = await API_KEYS.create(conn, "national-scheduler", ["appointments:read"])
        booking.keys["new"] = new
        assert await API_KEYS.revoke(conn, "national-scheduler", key_id=None) == 2
        revoked = await booking.client.get(
            f"/v1/appointments/{appointment_id}", headers=booking.auth("old")
        )
        assert problem_of(revoked, 401)["detail"] == "unknown or revoked API key"
        booking.keys["newest"] = await API_KEYS.create(
            conn, "national-scheduler", ["appointments:read"]
        )
    finally:
        await conn.close()
    # The same caller, with its next key, still sees what it booked.
    assert (await booking.view(appointment_id, "newest"))["calling_system"] == "national-scheduler"


async def test_current_cgu_and_openapi_are_published(booking: Any) -> None:
    cgu = (await booking.client.get("/v1/cgu/current")).json()
    assert cgu["version"] == "1" and len(cgu["sha256"]) == 64
    # Where consent publishes that very version (BOOKING_CONSENT_PUBLIC_URL, local here).
    assert cgu["url"] == "http://127.0.0.1:8083/cgu/1"
    assert (await booking.client.get("/openapi.json")).status_code == 404  # admin port only
    admin = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=booking.app.state.admin), base_url="http://admin"
    )
    async with admin:
        spec = (await admin.get("/openapi.json")).json()
        assert (await admin.get("/docs")).status_code == 200
    assert {
        "/v1/appointments",
        "/v1/appointments/{appointment_id}",
        "/v1/appointments/{appointment_id}/reschedule",
        "/v1/appointments/{appointment_id}/cancel",
        "/v1/appointments/{appointment_id}/contact",
        "/v1/appointments/{appointment_id}/reassign",
        "/v1/cgu/current",
    } <= set(spec["paths"])
    assert "caf_code" in spec["components"]["schemas"]["BookingRequest"]["properties"]
