"""gc_tuning: the collector's one switch, paused by two threads (the controller's pass, the
manifests source reading a file), read through CPython's own counters and callbacks."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from kube2haproxy import gc_tuning


@pytest.fixture(autouse=True)
def collector() -> Iterator[list[int]]:
    """The generations collected meanwhile; the collector enabled and unfrozen before and
    after."""
    collected: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collected.append(info["generation"])

    gc.enable()
    gc.unfreeze()
    gc.callbacks.append(record)
    try:
        yield collected
    finally:
        gc.callbacks.remove(record)
        gc.unfreeze()
        gc.enable()


def test_a_pause_that_keeps_freezes_what_was_built_when_it_ends_normally():
    with gc_tuning.paused(keep=True):
        assert not gc.isenabled()
        built = [{"n": i} for i in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(built)


def test_a_pause_that_fails_or_does_not_keep_freezes_nothing():
    with pytest.raises(RuntimeError), gc_tuning.paused(keep=True):
        raise RuntimeError("the load failed: what it built is garbage")
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with gc_tuning.paused():
        pass
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_the_collector_resumes_when_the_last_pause_ends(collector):
    with gc_tuning.paused():
        with gc_tuning.loading():  # inside another pause: no collection, no freeze
            pass
        assert not gc.isenabled()
        assert collector == [] and gc.get_freeze_count() == 0
    assert gc.isenabled()


def test_loading_beside_another_threads_pause_neither_collects_nor_freezes(collector):
    held, release = threading.Event(), threading.Event()

    def pass_of_the_controller() -> None:
        with gc_tuning.paused():
            held.set()
            release.wait(10)

    other = threading.Thread(target=pass_of_the_controller)
    other.start()
    try:
        assert held.wait(10)
        with gc_tuning.loading():
            pass
        assert collector == [] and gc.get_freeze_count() == 0
        assert not gc.isenabled()  # the other pass still holds it
    finally:
        release.set()
        other.join(10)
    assert gc.isenabled()


def test_loading_alone_collects_first_then_freezes(collector):
    with gc_tuning.loading():
        assert collector == [2]  # a full collection while the heap is small
        built = [{"n": i} for i in range(1000)]
    assert gc.get_freeze_count() >= len(built) and gc.isenabled()
