"""reloads: the emulator's reload agent: queued reloads, their ids, and what /reloads reports.

Mirrors dataplaneapi v3.4.2's reload_agent: a write that asks for a reload gets the id of the
queued one, `YYYY-MM-DD-<n>` (local date, <n> a counter from 0 never reset), creating it if
none is queued, so writes that arrive while a reload is queued share its id. A forced reload
runs the queued one at once if there is one (it then succeeds or fails under that id), else an
unrecorded one. The agent remembers failed reloads, the last success, the one running and the
one queued; an id older than the last success that did not fail reads as succeeded.

One deviation: dataplaneapi's ticker fires every reload_delay, so a queued reload waits between
0 and reload_delay; here it runs exactly `delay_s` after it was queued (the worst case), so a
test can coalesce writes deterministically.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

ID_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}-\d+$")


class ReloadFailed(Exception):
    """The reload did not happen; `response` is what HAProxy said."""

    def __init__(self, message: str, *, response: str) -> None:
        super().__init__(message)
        self.response = response


@dataclass(frozen=True, slots=True)
class Reload:
    """The spec's `reload` object; every field is omitempty."""

    id: str
    status: str  # in_progress | failed | succeeded
    response: str = ""
    reload_timestamp: int = 0

    def as_json(self) -> dict[str, object]:
        fields = {
            "id": self.id,
            "status": self.status,
            "response": self.response,
            "reload_timestamp": self.reload_timestamp,
        }
        return {name: value for name, value in fields.items() if value}


def _id_key(reload_id: str) -> tuple[str, int]:
    date, _, index = reload_id.rpartition("-")
    return date, int(index)


class ReloadAgent:
    """Queues reloads and runs them on a thread of its own, under the emulator's state lock
    (so a reload and a config write never interleave, as the real agent holds its cache lock
    for the whole reload)."""

    def __init__(self, reload: Callable[[], str], *, delay_s: float, lock: threading.RLock) -> None:
        """`reload` reloads HAProxy and returns its output, or raises ReloadFailed."""
        self._reload = reload
        self.delay_s = delay_s
        self._lock = lock
        self._wake = threading.Condition(lock)
        self._failed: dict[str, Reload] = {}
        self._last_success: Reload | None = None
        self._current = ""
        self._next = ""
        self._due = 0.0  # when the queued reload runs (monotonic)
        self._index = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dataplane-reloads", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def schedule(self) -> str:
        """The id of the queued reload, queued now if none is."""
        with self._lock:
            if not self._next:
                self._next = f"{time.strftime('%Y-%m-%d')}-{self._index}"
                self._index += 1
                self._due = time.monotonic() + self.delay_s
                self._wake.notify_all()
            return self._next

    def force(self) -> None:
        """Reload now; ReloadFailed (message "Reload failed: <error>, <output>") when it fails."""
        with self._lock:
            if self._next:
                failure = self._handle(self._next)
            else:
                try:
                    self._reload()
                    failure = None
                except ReloadFailed as exc:
                    failure = exc
        if failure is not None:
            raise ReloadFailed(
                f"Reload failed: {failure}, {failure.response}", response=failure.response
            )

    def reloads(self) -> list[dict[str, object]]:
        with self._lock:
            listed = list(self._failed.values())
            if self._last_success is not None:
                listed.append(self._last_success)
            listed.extend(Reload(i, "in_progress") for i in (self._current, self._next) if i)
            return [r.as_json() for r in listed]

    def get(self, reload_id: str) -> dict[str, object] | None:
        with self._lock:
            if reload_id == self._current:
                return Reload(self._current, "in_progress").as_json()
            if reload_id == self._next:
                # dataplaneapi answers the queued id with the *running* one's id (often none).
                return Reload(self._current, "in_progress").as_json()
            if reload_id in self._failed:
                return self._failed[reload_id].as_json()
            success = self._last_success
            if success is None:
                return None
            if success.id == reload_id:
                return success.as_json()
            (success_date, success_index), (date, index) = _id_key(success.id), _id_key(reload_id)
            if date < success_date or (date == success_date and index < success_index):
                return Reload(reload_id, "succeeded").as_json()
            return None

    def _run(self) -> None:
        with self._lock:
            while not self._stopping:
                if not self._next:
                    self._wake.wait()
                    continue
                wait = self._due - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                self._handle(self._next)

    def _handle(self, reload_id: str) -> ReloadFailed | None:
        """Run the queued reload (the lock held) and record its outcome."""
        self._current = reload_id
        try:
            response = self._reload()
        except Exception as exc:  # anything else too: the agent's thread must live on
            failure = exc if isinstance(exc, ReloadFailed) else ReloadFailed(str(exc), response="")
            self._failed[reload_id] = Reload(
                reload_id, "failed", failure.response, int(time.time())
            )
            return failure
        else:
            self._last_success = Reload(reload_id, "succeeded", response, int(time.time()))
            return None
        finally:
            self._current = ""
            self._next = ""
