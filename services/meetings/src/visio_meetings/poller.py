"""After each meeting, once: its attendance report (and, if recording was authorised, its
recordings' metadata) fetched from Graph and published on meetings.v1.

Meetings due are claimed with FOR UPDATE SKIP LOCKED, so replicas share them, and under the
appointment's lock (tried, never waited for: a handler busy with the appointment keeps it for
the next round). Like the handlers, the events are published before the outcome commits: a
crash between the two publishes them again, with the same event ids. A report Graph does not
list yet (or a Graph failure) is asked for again later, up to `attendance_max_attempts`, then
`MeetingAttendanceUnavailable` says why. Time comes from `clock`, so tests move it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from visio_runtime.errors import Transient
from visio_shared import Envelope, Topics
from visio_shared.publishing import Publisher, publish_event

from visio_meetings import attendance, store
from visio_meetings.graph import GraphClient
from visio_meetings.refusals import GraphRefused, GraphUnauthorized
from visio_meetings.settings import MeetingsSettings
from visio_meetings.store import AttendanceDue

log = logging.getLogger(__name__)

_GRAPH_FAILURES = (Transient, GraphRefused, GraphUnauthorized)


@dataclass(frozen=True)
class MeetingsPollerDeps:
    pool: asyncpg.Pool
    graph: GraphClient
    publisher: Publisher
    topics: Topics
    settings: MeetingsSettings
    clock: Callable[[], datetime]


async def poll_once(deps: MeetingsPollerDeps) -> int:
    """Handle every meeting due now; returns how many were asked about."""
    now = deps.clock()
    passed: list[uuid.UUID] = []  # handled or busy: next round's
    async with deps.pool.acquire() as conn:
        while True:
            async with conn.transaction():
                due = await store.claim_attendance(conn, now, passed)
                if due is None:
                    return len(passed)
                passed.append(due.appointment_id)
                if await store.LOCKS.try_hold(conn, due.appointment_id):
                    await _after_the_meeting(deps, conn, due, now)


async def _after_the_meeting(
    deps: MeetingsPollerDeps, conn: asyncpg.Connection, due: AttendanceDue, now: datetime
) -> None:
    settings = deps.settings
    attempts = due.attempts + 1
    last_try = attempts >= settings.attendance_max_attempts
    try:
        reports = await _reports(deps.graph, due)
    except _GRAPH_FAILURES as exc:
        reports, error = [], f"graph_error: {exc}"
    else:
        error = "no_report: Graph lists no attendance report for the meeting"
    if not reports:
        if not last_try:
            later = now + timedelta(seconds=settings.attendance_retry_interval_s)
            await store.attendance_later(conn, due.appointment_id, later, attempts, error)
            log.info("meetings: attendance of %s not yet: %s", due.appointment_id, error)
            return
        reason = f"{error} (after {attempts} attempts)"
        await _publish(deps, attendance.attendance_unavailable(due, reason))
        await store.attendance_done(conn, due.appointment_id, "unavailable", attempts, reason, now)
        log.warning("meetings: attendance of %s unavailable: %s", due.appointment_id, reason)
        return
    recordings: list[dict[str, Any]] = []
    problem = None
    if due.recording_authorised:
        try:
            recordings = await deps.graph.recordings(due.advisor_id, due.online_meeting_id)
        except _GRAPH_FAILURES as exc:
            # The attendance must not be lost to the recordings: tried again while attempts
            # remain, then published without them, the failure kept on the row for ops.
            problem = f"recordings not listed: {exc}"
            if not last_try:
                later = now + timedelta(seconds=settings.attendance_retry_interval_s)
                await store.attendance_later(conn, due.appointment_id, later, attempts, problem)
                return
            log.error("meetings: %s for appointment %s", problem, due.appointment_id)
    await _publish(deps, attendance.attendance_recorded(due, reports, settings.tenant_id))
    for recording in recordings:
        await _publish(deps, attendance.recording_available(due, recording))
    await store.attendance_done(conn, due.appointment_id, "recorded", attempts, problem, now)
    log.info(
        "meetings: attendance of %s recorded (%d recordings)", due.appointment_id, len(recordings)
    )


async def _reports(graph: GraphClient, due: AttendanceDue) -> list[dict[str, Any]]:
    listed = await graph.attendance_reports(due.advisor_id, due.online_meeting_id)
    return [
        await graph.attendance_report(due.advisor_id, due.online_meeting_id, str(report["id"]))
        for report in listed
    ]


async def _publish(deps: MeetingsPollerDeps, event: Envelope) -> None:
    await publish_event(deps.publisher, deps.topics.meetings, event)
