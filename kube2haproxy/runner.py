"""runner: wires the long-running controller (`kube2haproxy run`) and runs it until a signal.

Supervised when no master socket is given: we run HAProxy ourselves, starting it on the first
config that passes `haproxy -c`, and stop it gracefully on SIGTERM. Attached otherwise: HAProxy is
someone else's (a sidecar); we only write the file and talk to its master socket, and on SIGTERM
we exit while HAProxy keeps serving the last config. With `--applier dataplane` HAProxy is
reached through its Data Plane API only (it may run on another host): nothing to supervise, and
nothing of its host to look at here.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from kube2haproxy import configfile
from kube2haproxy.appliers.master import MasterCLI
from kube2haproxy.appliers.master_cli import MasterCLIApplier
from kube2haproxy.appliers.runtime import RuntimeAPI
from kube2haproxy.appliers.supervisor import Supervisor
from kube2haproxy.capabilities import Capabilities, capabilities
from kube2haproxy.controller import Controller
from kube2haproxy.errors import EnvironmentProblem
from kube2haproxy.events import Source
from kube2haproxy.health import HealthMonitor
from kube2haproxy.lock import Lock
from kube2haproxy.metrics import Metrics
from kube2haproxy.probes import ProbeServer
from kube2haproxy.publish import Publisher
from kube2haproxy.render import Renderer
from kube2haproxy.settings import Paths, RenderPaths, Settings, resolve_paths
from kube2haproxy.sockets import LocalHost
from kube2haproxy.sources.manifests import ManifestSource

if TYPE_CHECKING:
    # Imported where used: `requests` alone is ~0.15 s of every start without --applier dataplane.
    from kube2haproxy.appliers.dataplane import DataplaneApplier
    from kube2haproxy.appliers.dataplane_client import DataplaneClient

log = logging.getLogger(__name__)


def serve(settings: Settings, *, manifests: tuple[str, ...]) -> None:
    paths = resolve_paths(
        settings, uid=os.getuid(), environ=dict(os.environ), tmp=tempfile.gettempdir()
    )
    # Template errors before anything starts.
    renderer = Renderer(settings.render, RenderPaths(paths.runtime_socket, paths.maps_dir))
    publisher = Publisher(settings.publish)  # and an unreadable password file
    checker = _checker(settings.haproxy.binary)  # and a missing or unsupported haproxy
    client = _client(settings)  # and an unreadable Data Plane API password file
    metrics = Metrics()
    lock = Lock(Path(paths.lock))
    if paths.run_dir is not None:
        _prepare_run_dir(Path(paths.run_dir))
    lock.acquire()  # one controller per HAProxy; released when we exit (or die)
    try:
        _serve(
            settings,
            paths,
            renderer=renderer,
            publisher=publisher,
            metrics=metrics,
            checker=checker,
            client=client,
            manifests=manifests,
        )
    finally:
        lock.release()


def _serve(
    settings: Settings,
    paths: Paths,
    *,
    renderer: Renderer,
    publisher: Publisher,
    metrics: Metrics,
    checker: Capabilities,
    client: DataplaneClient | None,
    manifests: tuple[str, ...],
) -> None:
    supervisor = _supervisor(settings, paths, metrics)
    applier: MasterCLIApplier | DataplaneApplier
    host: LocalHost | None = None  # the Data Plane API's HAProxy: its host is not ours to see
    if client is not None:
        from kube2haproxy.appliers.dataplane import DataplaneApplier  # noqa: PLC0415 - heavy

        applier = DataplaneApplier(
            client=client,
            config=Path(paths.config),
            maps_dir=paths.maps_dir,
            binary=settings.haproxy.binary,
            check_timeout_s=settings.haproxy.check_timeout_ms / 1000,
            reload_timeout_s=settings.haproxy.reload_timeout_ms / 1000,
            force_reload=settings.applier.dataplane_force_reload,
        )
        unanswered = f"Data Plane API {client.url} does not answer"
        mode = f"through the Data Plane API at {client.url}"
    else:
        master = supervisor.master if supervisor is not None else MasterCLI(paths.master_socket)
        applier = MasterCLIApplier(
            config=Path(paths.config),
            maps_dir=Path(paths.maps_dir),
            binary=settings.haproxy.binary,
            check_timeout_s=settings.haproxy.check_timeout_ms / 1000,
            reload_timeout_s=settings.haproxy.reload_timeout_ms / 1000,
            master=master,
            runtime=RuntimeAPI(paths.runtime_socket),
            supervisor=supervisor,
            check_capabilities=checker,
        )
        host = LocalHost(pids=applier.pids, transparent=settings.render.bind_transparent)
        unanswered = f"haproxy master {paths.master_socket} does not answer"
        mode = "supervised" if supervisor is not None else f"attached to {paths.master_socket}"
    sources = _sources(settings, manifests, metrics)
    controller = Controller(
        settings=settings,
        sources=sources,
        applier=applier,
        renderer=renderer,
        metrics=metrics,
        host=host,
        publish=publisher.publish if publisher.enabled else None,
    )
    # The longest an apply may legitimately keep the loop busy: a check, a reload, a margin.
    stall_limit = (
        settings.haproxy.check_timeout_ms + settings.haproxy.reload_timeout_ms
    ) / 1000 + 60

    health = HealthMonitor(applier.healthy)

    def silent() -> str:
        quiet = health.silence()
        since = f" for {quiet:.0f}s" if quiet is not None else ""
        problem = getattr(applier, "problem", "")  # the Data Plane API says why
        return f"{unanswered}{since}" + (f": {problem}" if problem else "")

    def live() -> tuple[bool, str]:
        if controller.stalled(stall_limit):
            return False, f"controller loop stalled for more than {stall_limit:.0f}s"
        # Alive means HAProxy's master answers too, in both modes (once one is expected to
        # run): a pod whose HAProxy is silent must be restarted, not kept.
        expected = supervisor is None or supervisor.running or controller.applied_model
        if expected and not health.healthy():
            return False, silent()
        return True, "ok"

    def ready() -> tuple[bool, str]:
        if not controller.synced:
            return False, "waiting for the initial sync"
        if not controller.ready.is_set():
            return False, "no config applied yet"
        if not health.healthy():
            return False, silent()
        return True, "ok"

    probes = None
    if settings.observe.listen:
        probes = ProbeServer(
            settings.observe.listen,
            live=live,
            ready=ready,
            registry=metrics.registry,
            status=(lambda: controller.status) if settings.observe.serve_status else None,
        )
    health.start()
    if probes is not None:
        probes.start()

    stop_on_signals(controller)
    log.info(
        "kube2haproxy %s, writing %s, sources: %s",
        mode,
        paths.config,
        ", ".join(name for s in sources for name in s.names),
    )
    try:
        controller.start_sources()
        controller.run()
    finally:
        controller.stop()
        applier.close()
        health.stop()
        if probes is not None:
            probes.stop()
        if supervisor is not None:
            log.info("stopping haproxy")
            supervisor.stop()


def stop_on_signals(controller: Controller) -> None:
    """SIGTERM and SIGINT end the loop; the caller's `finally` stops the rest. The handler only
    asks: it runs between two steps of the main thread, which may be starting a source's thread
    (joining that thread from the handler raised, and the controller exited as a bug)."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        controller.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _client(settings: Settings) -> DataplaneClient | None:
    """The Data Plane API's client with --applier dataplane (its password read once, here)."""
    applier = settings.applier
    if applier.kind != "dataplane":
        return None
    from kube2haproxy.appliers.dataplane_client import (  # noqa: PLC0415 - heavy
        DataplaneClient,
        read_password,
    )

    url, user = applier.dataplane_url, applier.dataplane_username
    password_file = applier.dataplane_password_file
    assert url is not None, "settings.check"
    assert user is not None, "settings.check"
    assert password_file is not None, "settings.check"
    verify: bool | str = applier.dataplane_tls_verify
    if verify and applier.dataplane_ca_file:
        verify = applier.dataplane_ca_file
    elif not verify:
        log.warning(
            "the Data Plane API's TLS certificate is not verified (--no-dataplane-tls-verify)"
        )
    return DataplaneClient(
        url=url,
        username=user,
        password=read_password(password_file),
        verify=verify,
        timeout_s=applier.dataplane_timeout_ms / 1000,
    )


def _checker(binary: str) -> Capabilities:
    """The capabilities of the haproxy executable that checks configs (and, supervised, runs
    them): a missing one, or one too old, is a setup error, not something to retry forever."""
    if shutil.which(binary) is None:
        raise EnvironmentProblem(
            f"--haproxy-bin {binary}: not found or not executable (install HAProxy, or point "
            "--haproxy-bin at it)"
        )
    found = capabilities(configfile.binary_version(binary))
    log.info("%s is HAProxy %s", binary, found.version)
    return found


def _prepare_run_dir(run_dir: Path) -> None:
    """Create the run directory. It holds the config HAProxy loads (lua-load runs code) and
    the sockets we adopt: in a shared /tmp, a directory someone else made, or others may
    write to, is refused."""
    try:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = run_dir.stat()
    except OSError as exc:
        raise EnvironmentProblem(f"--run-dir {run_dir}: {exc.strerror or exc}") from exc
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise EnvironmentProblem(
            f"--run-dir {run_dir}: must belong to uid {os.getuid()} and be writable by it "
            f"alone (owner {info.st_uid}, mode {oct(info.st_mode & 0o777)})"
        )


def _supervisor(settings: Settings, paths: Paths, metrics: Metrics) -> Supervisor | None:
    if not paths.supervised:
        return None
    return Supervisor(
        binary=settings.haproxy.binary,
        config=paths.config,
        master_socket=paths.master_socket,
        on_exit=lambda _code: metrics.haproxy_exits.inc(),
    )


def _sources(settings: Settings, manifests: tuple[str, ...], metrics: Metrics) -> list[Source]:
    if manifests:
        return [ManifestSource(manifests, max_delay_s=settings.timing.max_delay_ms / 1000)]
    from kube2haproxy.sources.kube import KubeSource, api_client  # noqa: PLC0415 - heavy

    return [KubeSource(settings.kube, client=api_client(settings.kube), metrics=metrics)]
