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
import threading
from collections.abc import Iterator

# The collector is one switch for the whole process, and two threads pause it (the controller's
# pass, the manifests source reading a changed file): a pause is counted, the collector resumes
# when the last one ends, and only a pause alone collects or freezes.
_lock = threading.Lock()
_pauses = 0
_was_enabled = False


def settle() -> None:
    """Collect once, then freeze what survives (the loaded objects) out of future collections."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Load a large acyclic input: collect first (while the heap is small, so it is cheap),
    pause the collector while the input is built (decoding 20 MB of JSON with it running takes
    twice as long: each burst of new dicts triggers a collection that scans them all), then
    freeze what was built. What `settle` gives, without a full collection over the input.
    Within another pause (another thread's), it only pauses: that one's objects are not ours to
    collect or freeze."""
    with _lock:
        alone = _pauses == 0
    if alone:
        gc.collect()
    with paused(keep=True):
        yield


@contextlib.contextmanager
def paused(*, keep: bool = False) -> Iterator[None]:
    """Suspend the cyclic collector for a bounded burst of allocation. `keep`: what was built
    meanwhile lives on (a loaded input, a model): when the body ends normally and no other pause
    is held, freeze it before the collector resumes. Else the first allocation after it resumes
    starts a collection over everything built meanwhile, which counted as young: 0.2-0.3 s after
    loading or translating 10,000 services (py-spy on `render`)."""
    global _pauses, _was_enabled  # noqa: PLW0603 - the process's one collector switch
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    done = False
    try:
        yield
        done = True
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0:
                if keep and done:
                    gc.freeze()
                if _was_enabled:
                    gc.enable()


def freeze() -> None:
    """Move what lives now out of the collector's reach, without a collection first: cheap
    enough after every full apply of a long-running controller (whose objects are acyclic
    dicts, lists and tuples, freed by reference counting when they go)."""
    gc.freeze()
