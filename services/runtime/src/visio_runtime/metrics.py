"""Counters, exposed in Prometheus' text format at /metrics. A dict is enough for a handful of
counters; the names follow Prometheus conventions so a scraper can take them as they are."""

from __future__ import annotations

from collections import Counter


class Metrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self._counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        self._counters[(name, tuple(sorted(labels.items())))] += amount

    def value(self, name: str, **labels: str) -> int:
        return self._counters[(name, tuple(sorted(labels.items())))]

    def render(self) -> str:
        lines = []
        for (name, labels), count in sorted(self._counters.items()):
            pairs = [("service", self.service), *labels]
            rendered = ",".join(f'{key}="{value}"' for key, value in pairs)
            lines.append(f"visio_{name}{{{rendered}}} {count}")
        return "\n".join(lines) + "\n"
