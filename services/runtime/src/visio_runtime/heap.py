"""The cyclic garbage collector, told what a long-running service looks like.

CPython's collector walks every container object it tracks: the young ones often, all of them
at a full collection, which runs whenever the objects that survived a while have grown by a
quarter. A service's heap is mostly what its start made and never frees — modules, pydantic
schemas, templates, the routes, about 110,000 objects — and its steady work allocates without
end (records, events, dicts of a handler's rows) with a few living long enough to survive
two young collections. In a backlog bench (50,000 AppointmentRequested drained by meetings,
notifications and consent at once) that meant a full collection every two seconds, each
walking the whole heap for about 0.2 s: 27 % of notifications' CPU went to the collector,
46 % of meetings', 51 % of consent's, and the drains were held back by it.

Two things, both standard practice for a long-running CPython server:

- `settle()`, once the service has started: collect what the start left, then `gc.freeze()`
  moves every object alive into the permanent generation, which no collection walks again. A
  full collection then walks only what the service made since.
- `tune(young)`: a young collection after `young` allocations of containers rather than 700
  (CPython's default), so that most of a batch's objects are already freed when it runs. The
  same objects are collected; cycles just wait a few thousand allocations longer.

Measured in docs/performance.md (« the collector »): notifications' time in the collector in
one backlog run fell from 11 s to 3 s.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

# CPython's own thresholds for the older generations: a middle collection every 10 young ones,
# a full one every 10 middle ones (and only when the long-lived objects grew by a quarter).
_OLDER = (10, 10)


def tune(young: int) -> None:
    """A young collection after `young` net allocations of tracked objects."""
    gc.set_threshold(young, *_OLDER)


def settle() -> int:
    """Once started: collect the start's garbage, then set everything alive aside from the
    collector (`gc.freeze`). Returns how many objects were set aside."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("heap settled: %d objects set aside from the collector", frozen)
    return frozen
