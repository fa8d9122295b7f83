"""gc_tuning: garbage-collector tuning for the large, long-lived inputs this program holds.

A 10,000-service cluster is about a million dicts and lists. CPython's cyclic collector rescans
all of them on every full collection, which made translating such a cluster 40% slower. The input
contains no reference cycles worth collecting, so: after loading it, move it out of the
collector's reach (`settle`), and pause collection while translating and rendering (`paused`),
which allocate hundreds of thousands of short-lived tuples.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


def settle() -> None:
    """Collect once, then freeze what survives (the loaded objects) out of future collections."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Load a large acyclic input: collect first (while the heap is small, so it is cheap),
    pause the collector while the input is built (decoding 20 MB of JSON with it running takes
    twice as long: each burst of new dicts triggers a collection that scans them all), then
    freeze what was built. What `settle` gives, without a full collection over the input."""
    gc.collect()
    with paused(keep=True):
        yield


@contextlib.contextmanager
def paused(*, keep: bool = False) -> Iterator[None]:
    """Suspend the cyclic collector for a bounded burst of allocation. `keep`: what was built
    meanwhile lives on (a loaded input, a model): freeze it before the collector resumes. Else
    the first allocation after it resumes starts a collection over everything built meanwhile,
    which counted as young: 0.2-0.3 s after loading or translating 10,000 services (py-spy on
    `render`)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if keep:
            gc.freeze()
        if was_enabled:
            gc.enable()


def freeze() -> None:
    """Move what lives now out of the collector's reach, without a collection first: cheap
    enough after every full apply of a long-running controller (whose objects are acyclic
    dicts, lists and tuples, freed by reference counting when they go)."""
    gc.freeze()
