"""visio_runtime.heap: what a started service's heap is told (the real processes are checked in
tests/test_end_to_end.py, on their /metrics)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from visio_runtime import heap
from visio_runtime.metrics import Metrics
from visio_runtime.settings import ServiceSettings


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored")
def test_settling_sets_every_live_object_aside_and_a_full_collection_no_longer_walks_them() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    kept = Node()
    frozen = heap.settle()
    assert frozen == gc.get_freeze_count() > 1_000
    assert not any(obj is kept for obj in gc.get_objects())  # out of every generation
    # Cyclic garbage made afterwards is still collected.
    Node()
    assert gc.collect() >= 1
    # And the service's page says how many were set aside.
    page = Metrics("booking").render()
    assert f"visio_heap_frozen_objects {float(gc.get_freeze_count())}" in page


@pytest.mark.usefixtures("restored")
def test_the_young_threshold_is_the_settings_and_the_older_ones_cpythons() -> None:
    heap.tune(ServiceSettings(gc_young_threshold=25_000).gc_young_threshold)
    assert gc.get_threshold() == (25_000, 10, 10)
    assert ServiceSettings().gc_young_threshold == 10_000
