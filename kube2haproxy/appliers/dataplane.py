"""dataplane: the applier of an HAProxy managed through HAProxy's Data Plane API (v3).

A full change: the config is checked here with `haproxy -c` (its map files beside it), the map
files it names are uploaded to the API's map storage, then the config is pushed whole through the
raw configuration endpoint with the configuration version it replaces (optimistic concurrency: a
409, another writer's change, re-reads the version and pushes again, CONFLICT_RETRIES times) and
`force_reload`, so the answer is the reload's outcome (or, with the API's queued reloads, its id
is followed until it succeeded or failed). The new worker is then confirmed by reading back the
servers of a backend the push changed. A config the API refuses (400: its `haproxy -c`, or the
reload) is ConfigRefused: the API keeps the last good one, and the same text is not sent again
for a while.

Endpoint churn: the plan's slot changes (`plan.ops.slots`: those that add capacity, then those
that take it away) become PUTs of runtime servers (dataplane_servers.py), each answer checked;
then the same config is pushed without a reload, from a thread of its own, so that the file on
the API's host is what runs and a later reload loses nothing. `abilities()` says that is all it
does at runtime: no server added or deleted, no map entry (the planner reloads for a scale-up
past the slots and for a new or deleted service). Anything else a runtime plan holds is not
tried here: RuntimeUpdateError, and the controller pushes in full.

Never here: the password (the client holds it), HTTP (the client), HAProxy's processes (the
API's host runs them).
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path

from kube2haproxy import configfile
from kube2haproxy.appliers import ApplyReport, Config, Outcome, Running, go_on
from kube2haproxy.appliers.dataplane_client import API, RAW, DataplaneClient, Pusher
from kube2haproxy.appliers.dataplane_servers import (
    as_server,
    canonical_ip,
    restored_weight,
    same_line,
    slot_bodies,
)
from kube2haproxy.appliers.master_cli import RESEND_REFUSED_AFTER_S
from kube2haproxy.deployed import Abilities, SlotChange
from kube2haproxy.errors import (
    CheckError,
    ConfigRefused,
    EnvironmentProblem,
    HAProxyUnavailable,
    Kube2HAProxyError,
    RuntimeUpdateError,
    UnexpectedAnswer,
)
from kube2haproxy.model import Backend, Model, Server, ServerState
from kube2haproxy.plan import Action, Changes, Plan

log = logging.getLogger(__name__)

VERSION_LINE = "# _version="
# How long a runtime server may take to show what a PUT set: from 3.0 a new address can read
# as the old one for a moment (3.0.11 to 3.4.0: up to 6 in 300 changes; 2.6.12: never).
SETTLE_S = 1.0
# What a runtime update may hold for this applier: slot changes. One with anything more (lines
# added or deleted, map entries, an operation deployed.py grows later) is pushed in full instead.
RUNTIME_OPS = frozenset({"grow", "shrink"})


class DataplaneApplier:
    def __init__(
        self,
        *,
        client: DataplaneClient,
        config: Path,
        maps_dir: str,
        binary: str,
        check_timeout_s: float,
        reload_timeout_s: float,
        force_reload: bool = True,
    ) -> None:
        """`config`: where our copy of what the API was given goes (and `.rejected` beside
        it); `maps_dir`: the API's maps_dir, where the config says its map files are."""
        self.client = client
        self.config = config
        self.maps_dir = maps_dir.rstrip("/")
        self.binary = binary
        self.check_timeout_s = check_timeout_s
        self.reload_timeout_s = reload_timeout_s
        self.force_reload = force_reload
        self.pusher = Pusher(client.copy(), check_timeout_s=check_timeout_s)
        self._health = client.copy()  # the health thread's session
        self.problem = ""  # why the API was last found unhealthy, for the probes
        self._running: Config | None = None  # what HAProxy runs, as far as we know
        self._model: Model | None = None
        self._adopt = True  # until our first push: the API may hold our config already
        self._refused: tuple[str, float] | None = None  # a config the API refused, and when

    # --- the protocol ---------------------------------------------------------------------

    def apply(self, plan: Plan, config: Config) -> ApplyReport:
        if plan.action is Action.RUNTIME:
            return self._update(plan, config)
        self.pusher.sync.flush()  # a runtime update's file must not land after this push
        if not plan.force and self._runs(config):
            self._upload(config.files)  # a reload by anyone loads them
            self._model = plan.model
            return ApplyReport(Outcome.UNCHANGED)
        return self._push(plan.model, config)

    def observe(self, *, pause: Callable[[], None] = go_on) -> Running | None:
        """The servers of every backend of the model last applied, read back through the API
        (one request per backend); a backend HAProxy does not run is left out."""
        model = self._model
        if model is None:
            return None
        servers: dict[tuple[str, str], Server] = {}
        for backend in model.backends:
            pause()
            for found in self.client.servers(backend.name) or ():
                name = str(found.get("name", ""))
                servers[(backend.name, name)] = as_server(name, found)
        return Running(servers)

    def healthy(self) -> bool:
        """The API answers, and does not report HAProxy down."""
        try:
            state = self._health.health()
        except Kube2HAProxyError as exc:
            self.problem = str(exc)
            return False
        self.problem = "" if state != "down" else "the Data Plane API reports HAProxy down"
        return not self.problem

    def abilities(self) -> Abilities:
        """Server slots only: the API's runtime server add takes its options as JSON fields,
        not the rendered line's (a user template can render any), and a new service needs a
        server added to its spare before its map entry can route to it."""
        return Abilities(add_servers=False, delete_servers=False, routes=False)

    def close(self) -> None:
        try:
            self.pusher.sync.close(timeout_s=self.check_timeout_s + self.client.timeout_s)
        except EnvironmentProblem as exc:
            log.error("%s", exc)
        for client in (self.client, self._health, self.pusher.client):
            client.close()

    # --- full pushes ----------------------------------------------------------------------

    def _runs(self, config: Config) -> bool:
        """HAProxy runs this config already: the one we pushed last and nobody changed since,
        or (after a restart) the one the API holds."""
        if self._running is None:
            if not self._adopt:
                return False
            raw = self.client.raw()
            self._adopt = False
            first, _, text = raw.partition("\n")
            if not first.startswith(VERSION_LINE) or text != config.text:
                return False
            log.info("the Data Plane API holds the rendered config already: adopted, not pushed")
            self._running = config
            self.pusher.version = int(first.removeprefix(VERSION_LINE).strip() or 0) or None
            return True
        if self._running != config or self.pusher.sync.behind:
            return False
        current = self.client.version()
        if current != self.pusher.version:
            log.warning(
                "the Data Plane API's configuration changed under us (version %d, we wrote %s): "
                "pushing ours again",
                current,
                self.pusher.version,
            )
            return False
        return True

    def _push(self, model: Model, config: Config) -> ApplyReport:
        text = config.text
        if (
            self._refused is not None
            and self._refused[0] == text
            and time.monotonic() - self._refused[1] < RESEND_REFUSED_AFTER_S
        ):
            raise ConfigRefused(
                "the Data Plane API refused this exact config already; waiting for a change "
                f"(it is kept in {configfile.rejected_path(self.config)})"
            )
        self._adopt = False
        started = time.monotonic()
        try:
            output = configfile.check_text(
                text,
                binary=self.binary,
                timeout_s=self.check_timeout_s,
                name=str(self.config),
                files=config.files,
                maps_dir=self.maps_dir,
            )
        except CheckError as exc:
            rejected = configfile.keep_rejected(self.config, text)
            raise CheckError(f"{exc}; the config is kept in {rejected}", output=exc.output) from exc
        check_s = time.monotonic() - started
        started = time.monotonic()
        self._upload(config.files)
        mode = "force" if self.force_reload else "queued"
        timeout_s = self.check_timeout_s + self.reload_timeout_s + self.client.timeout_s
        try:
            answer = self.pusher.push(text, reload=mode, timeout_s=timeout_s)
            if answer.status == 400:
                raise ConfigRefused(
                    f"the Data Plane API refused the config (POST {API}{RAW}: 400)",
                    output=self.client.message(answer),
                )
            if answer.status == 202:
                self._await_reload(answer.headers.get("Reload-Id", ""))
            self._confirm(model)
        except ConfigRefused as exc:
            self._refused = (text, time.monotonic())
            rejected = configfile.keep_rejected(self.config, text)
            raise ConfigRefused(f"{exc}; it is kept in {rejected}", output=exc.output) from exc
        except EnvironmentProblem:
            self._running = None  # it may or may not have been loaded: push it again
            raise
        apply_s = time.monotonic() - started
        configfile.write_atomic(self.config, text)
        self._running, self._model = config, model
        if config.files_glob:
            self._prune(config)
        return ApplyReport(Outcome.RELOADED, check_s, apply_s, output)

    def _await_reload(self, reload_id: str) -> None:
        """Follow a queued reload until it succeeded (or failed: ConfigRefused with what HAProxy
        said) within the reload timeout."""
        if not reload_id:
            raise HAProxyUnavailable(f"Data Plane API POST {API}{RAW}: 202 without a Reload-Id")
        deadline = time.monotonic() + self.reload_timeout_s
        while True:
            found = self.client.reload_status(reload_id)
            status = found.get("status")
            if status == "succeeded":
                return
            if status == "failed":
                raise ConfigRefused(
                    f"HAProxy refused the config at reload {reload_id}",
                    output=str(found.get("response", "")),
                )
            if time.monotonic() > deadline:
                raise HAProxyUnavailable(
                    f"reload {reload_id} of the Data Plane API still {status} after "
                    f"{self.reload_timeout_s:g}s"
                )
            time.sleep(0.1)

    def _confirm(self, model: Model) -> None:
        """The new worker runs what was pushed: the servers of a backend the push changed (or
        else the first) read back as pushed, within the reload timeout."""
        backend = _probe(model, self._model)
        if backend is None:
            return
        wanted = {(s.name, s.ip, s.port) for s in backend.servers}
        deadline = time.monotonic() + self.reload_timeout_s
        while True:
            found = self.client.servers(backend.name)
            running = {
                (str(f.get("name")), canonical_ip(str(f.get("address", ""))), f.get("port"))
                for f in found or ()
            }
            if running == wanted:
                return
            if time.monotonic() > deadline:
                raise HAProxyUnavailable(
                    "the Data Plane API reported the reload done, but HAProxy does not run "
                    f"backend {backend.name} as pushed after {self.reload_timeout_s:g}s"
                )
            time.sleep(0.05)

    def _upload(self, files: Mapping[str, str]) -> None:
        """Put the map files the config names into the API's map storage (their names carry
        their content's hash: one stored already is the same)."""
        if not files:
            return
        stored = self.client.storage_maps()
        for name, text in files.items():
            path = stored.get(name) or self.client.upload_map(name, text)
            if path is not None and path != f"{self.maps_dir}/{name}":
                raise EnvironmentProblem(
                    f"the Data Plane API keeps map {name} as {path}, but the config names "
                    f"{self.maps_dir}/{name}: set --maps-dir to the API's maps_dir"
                )

    def _prune(self, config: Config) -> None:
        """Delete stored map files of ours that the running config no longer names."""
        for name in self.client.storage_maps():
            ours = fnmatch.fnmatchcase(name, config.files_glob)
            if ours and name not in config.files and not self.client.delete_map(name):
                log.debug("map %s is still named by the API's config; kept", name)

    # --- runtime updates ------------------------------------------------------------------

    def _update(self, plan: Plan, config: Config) -> ApplyReport:
        if self._running is None:
            raise RuntimeUpdateError("the running config is unknown: a full push sets it")
        beyond = _beyond_slots(plan)
        if beyond:
            raise RuntimeUpdateError(
                "the Data Plane API applier updates server slots at runtime, not "
                + ", ".join(beyond)
            )
        if dict(config.files) != dict(self._running.files):
            raise RuntimeUpdateError("map files changed: only a push delivers them")
        started = time.monotonic()
        for change in plan.ops.slots:
            try:
                self._apply_slot(change)
            except UnexpectedAnswer as exc:
                raise RuntimeUpdateError(str(exc)) from exc
        elapsed = time.monotonic() - started
        # HAProxy runs this text now (only server lines changed; lines beyond a smaller count
        # run parked, as a reload would drop them): the API's file follows, off the latency
        # path. A full push waits for it first.
        self.pusher.sync.submit(config.text)
        self._running, self._model = config, plan.model
        return ApplyReport(Outcome.UPDATED, apply_s=elapsed)

    def _apply_slot(self, change: SlotChange) -> None:
        backend, name, wanted = change.backend, change.server, change.after
        found = None
        for body in slot_bodies(change):
            found = self.client.set_server(backend, name, body)
        if found is None:
            return
        weight = restored_weight(found) if wanted.state is ServerState.READY else None
        if weight is not None:
            found = self.client.set_server(backend, name, {"weight": weight})
        # From 3.0 HAProxy may apply a new address a moment after it answered (its threads
        # take it in turn): read again before calling it a failure.
        deadline = time.monotonic() + SETTLE_S
        while not same_line(now := as_server(name, found), wanted):
            if time.monotonic() > deadline:
                raise RuntimeUpdateError(
                    f"{backend}/{name}: HAProxy reports {now.address} {now.state.value} after "
                    f"the update, not {wanted.address} {wanted.state.value}"
                )
            time.sleep(0.01)
            found = self.client.server(backend, name)


def _beyond_slots(plan: Plan) -> list[str]:
    """What a runtime plan asks beyond server slots (operations deployed.py may grow too)."""
    extra = [
        f.name for f in fields(plan.ops) if f.name not in RUNTIME_OPS and getattr(plan.ops, f.name)
    ]
    # Endpoints moved, and slot counts (lines beyond a smaller count are parked): nothing else.
    if replace(plan.changes, servers_changed=(), slots_changed=()) != Changes():
        extra.append("changes other than endpoints")
    return extra


def _probe(model: Model, before: Model | None) -> Backend | None:
    """The backend whose servers tell that `model` runs: one the push added or changed, else
    the first (None: no backend at all)."""
    old = {b.name: b for b in before.backends} if before is not None else {}
    for backend in model.backends:
        if old.get(backend.name) != backend:
            return backend
    return model.backends[0] if model.backends else None
