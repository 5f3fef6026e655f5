"""The text messages' metrics (docs/sms.md, docs/operations.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from visio_runtime.metrics import Metrics

SMS_KINDS = ("confirmation", "rescheduled", "advisor_changed", "cancellation", "reminder")


@dataclass
class SmsMetrics:
    """What ops watch (docs/sms.md); at 0 from the start, for rate()."""

    metrics: Metrics
    sends: Any = field(init=False)
    segments: Any = field(init=False)
    failures: Any = field(init=False)
    ambiguous: Any = field(init=False)
    receipts: Any = field(init=False)

    def __post_init__(self) -> None:
        m = self.metrics
        self.sends = m.counter(
            "sms_sends_total",
            "Text messages handed to the provider, by kind and outcome (sent, deferred, "
            "rejected, ambiguous, found: already with the provider after a lost answer).",
            ["kind", "outcome"],
        )
        self.segments = m.counter(
            "sms_segments_total", "SMS segments sent (what is paid for), by encoding.", ["encoding"]
        )
        self.failures = m.counter(
            "sms_failures_total",
            "Text messages that will never reach the person, by reason (rejected, hard_bounce).",
            ["reason"],
        )
        self.ambiguous = m.counter(
            "sms_ambiguous_total",
            "Sends whose answer was lost and the provider could not tell: resent (at least "
            "once) or given up (at most once).",
            ["resolution"],
        )
        self.receipts = m.counter(
            "sms_receipts_total", "Delivery receipts from the provider, by status.", ["status"]
        )
        for kind in SMS_KINDS:
            for outcome in ("sent", "deferred", "rejected", "ambiguous", "found"):
                self.sends.labels(kind, outcome)
        for encoding in ("GSM-7", "UCS-2"):
            self.segments.labels(encoding)
        for reason in ("rejected", "hard_bounce"):
            self.failures.labels(reason)
        for resolution in ("resent", "given_up"):
            self.ambiguous.labels(resolution)
