"""Live parts only the tests use: a supervised HAProxy in a temporary directory and its applier,
a small config routing a frontend to real backends (testkit.backends), a client that keeps
sending requests and records every failure, and waiting for a condition."""

from __future__ import annotations

import functools
import http.client
import random
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kube2haproxy import configfile
from kube2haproxy.appliers import ApplyReport, Config
from kube2haproxy.appliers.master_cli import MasterCLIApplier
from kube2haproxy.appliers.runtime import RuntimeAPI
from kube2haproxy.appliers.supervisor import Supervisor
from kube2haproxy.capabilities import Capabilities, capabilities
from kube2haproxy.deployed import loaded
from kube2haproxy.model import Model
from kube2haproxy.plan import Action, Plan
from kube2haproxy.render import BUNDLED
from testkit.backends import Backend, get
from testkit.builders import JSON

# How long a controller process may take to start answering its probes: importing the
# kubernetes client's API classes alone takes 2-5 s on a loaded 2-core machine.
STARTUP_S = 60.0


def wait_for(predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


class Traffic:
    """Sends requests one after another on new connections, until stopped; every failure is
    kept with its time and reason."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.ok = 0
        self.failures: list[str] = []
        self.seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                name = get(self.ip, self.port)
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{time.monotonic():.3f} {type(exc).__name__}: {exc}")
                continue
            self.ok += 1
            self.seen[name] = self.seen.get(name, 0) + 1


def storm(
    put: Callable[[JSON], None],
    slice_of: Callable[..., JSON],
    pool: list[Backend],
    changes: int,
) -> set[str]:
    """`changes` endpoint changes faster than they can be applied one by one (random sets of
    1 to 8 of `pool`, seeded), a short pause every third; the names of the last set."""
    rng = random.Random(7)
    last: set[str] = set()
    for i in range(changes):
        chosen = rng.sample(pool, rng.randint(1, 8))
        last = {x.name for x in chosen}
        put(slice_of(*chosen))
        if i % 3 == 0:
            threading.Event().wait(0.02)
    return last


@functools.cache
def capabilities_of(binary: str) -> Capabilities:
    """The capabilities of an haproxy executable (asked once per test session)."""
    return capabilities(configfile.binary_version(binary))


def applier_for(
    supervisor: Supervisor, *, binary: str, reload_timeout_s: float = 30.0
) -> MasterCLIApplier:
    """The real applier driving a supervised HAProxy (its config is the supervisor's)."""
    config = Path(supervisor.config)
    return MasterCLIApplier(
        config=config,
        maps_dir=config.parent / "maps",
        binary=binary,
        check_timeout_s=30,
        reload_timeout_s=reload_timeout_s,
        master=supervisor.master,
        runtime=RuntimeAPI(str(Path(supervisor.master.path).parent / "admin.sock")),
        supervisor=supervisor,
        check_capabilities=capabilities_of(binary),
    )


def supervised(tmp: Path, binary: str) -> tuple[Supervisor, MasterCLIApplier]:
    """A supervisor for an HAProxy whose config and master socket live in tmp, and its applier."""
    supervisor = Supervisor(
        binary=binary, config=str(tmp / "haproxy.cfg"), master_socket=str(tmp / "master.sock")
    )
    return supervisor, applier_for(supervisor, binary=binary)


def load(applier: MasterCLIApplier, text: str) -> ApplyReport:
    """Have the applier reload HAProxy with a config text (of no model: tests of the edge)."""
    return applier.apply(Plan(Action.RELOAD, loaded(Model())), Config(text))


def haproxy_config(tmp: Path, vip: str, port: int, servers: list[Backend], extra: str = "") -> str:
    """A small valid haproxy.cfg: one frontend on vip:port to the given backends."""
    lines = "\n".join(f"    server s{i} {b.address}" for i, b in enumerate(servers, 1))
    return (
        textwrap.dedent(f"""\
        global
            stats socket {tmp}/admin.sock mode 600 level admin
        defaults
            mode tcp
            timeout connect 2s
            timeout client 10s
            timeout server 10s
        frontend fe_web
            bind {vip}:{port}
            default_backend web
        backend web
        """)
        + lines
        + "\n"
        + extra
    )


def refusing_templates(tmp: Path) -> Path:
    """A templates directory whose backends.j2 renders a line HAProxy refuses
    (`no_such_keyword`) in every leastconn backend, and the bundled config otherwise."""
    templates = tmp / "templates"
    templates.mkdir()
    (templates / "backends.j2").write_text(
        (BUNDLED / "backends.j2")
        .read_text()
        .replace(
            "{{ server_lines(be) }}",
            "{% if be.balance == 'leastconn' %}\n    no_such_keyword\n{% endif %}\n"
            "{{ server_lines(be) }}",
        )
    )
    return templates
