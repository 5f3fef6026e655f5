"""Writing the advisor's event's body again after a change (contact corrected, recording
withdrawn, personal data erased), mailing no one.

Graph's `PATCH /users/{id}/events/{id}` sends a meeting update to attendees when the
attendees change; meetings' events have none (the person gets our own email) and these
requests name only `body` (and `subject`), so nobody is mailed. Graph's documentation also
warns that a body written without the Teams block it appended ("meeting blob") can turn the
online meeting off: the current body is read first, and everything from the Teams block on
(after our reference, the last line we write) is kept below the new text.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from visio_meetings import calls
from visio_meetings.advisor_note import AdvisorNote, note_html
from visio_meetings.graph import GraphClient
from visio_meetings.refusals import GraphRefused

# The Teams block opens (and closes) with a rule drawn with underscores.
_TEAMS_RULE = re.compile(r"_{20,}")


def teams_block(body_html: str, appointment_id: uuid.UUID) -> str:
    """The Teams block of an event's HTML body ("" when it has none): from the element holding
    its first rule, after our reference, to the end of the body's content."""
    after = max(body_html.rfind(str(appointment_id)), 0)
    rule = _TEAMS_RULE.search(body_html, after)
    if rule is None:
        return ""
    begin = body_html.rfind("<div", after, rule.start())
    begin = rule.start() if begin < 0 else begin
    end = body_html.lower().rfind("</body>")
    return body_html[begin : end if end > begin else len(body_html)]


def _content(event: dict[str, Any]) -> str:
    body = event.get("body") or {}
    content = body.get("content")
    return content if isinstance(content, str) else ""


async def rewrite_note(
    graph: GraphClient,
    advisor_id: str,
    event_id: str,
    note: AdvisorNote,
    *,
    subject: str | None = None,
) -> bool:
    """The event's body says `note` (and its subject `subject`, when given), its Teams block
    kept; False when the event is gone (cancelled, deleted in Outlook): nothing to write."""
    try:
        current = await graph.call(calls.get_event_body(advisor_id, event_id))
        content = note_html(note) + teams_block(_content(current), note.appointment_id)
        await graph.call(calls.rewrite_event_body(advisor_id, event_id, content, subject=subject))
    except GraphRefused as refused:
        if refused.status == 404:
            return False
        raise
    return True
