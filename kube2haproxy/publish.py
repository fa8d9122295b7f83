"""publish: keeps the files that say where services live in step with what HAProxy runs.

After every reload the controller hands the model over: the DNS hosts file and zone file, and
keepalived's configuration, are rewritten atomically when their content changes (the zone with a
serial above the previous one), and keepalived is told to reload (SIGHUP) when its VIPs changed.
A failure here is logged and retried with the next model; it never stops serving.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from kube2haproxy import configfile, dns, keepalived
from kube2haproxy.errors import EnvironmentProblem, KeepalivedError
from kube2haproxy.model import Model
from kube2haproxy.settings import PublishSettings

log = logging.getLogger(__name__)


class Publisher:
    def __init__(
        self, settings: PublishSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._zone = dns.check_zone(settings.dns_zone)
        self._nameserver = dns.check_nameserver(settings.dns_nameserver)
        self._records: list[dns.Record] | None = None
        self._serial = 0
        if settings.dns_zone_file and Path(settings.dns_zone_file).exists():
            found = dns.serial_of(Path(settings.dns_zone_file).read_text(errors="replace"))
            self._serial = found or 0
        self._vrrp: keepalived.Vrrp | None = None
        if settings.keepalived_config:
            if not settings.keepalived_interface:
                raise EnvironmentProblem("--keepalived-config needs --keepalived-interface")
            password = None
            if settings.keepalived_password_file:
                try:
                    password = Path(settings.keepalived_password_file).read_text().strip()
                except OSError as exc:
                    raise EnvironmentProblem(
                        f"--keepalived-password-file {settings.keepalived_password_file}: {exc}"
                    ) from exc
            host = socket.gethostname().split(".")[0][:15] or "kube2haproxy"
            try:
                self._vrrp = keepalived.check(
                    keepalived.Vrrp(
                        settings.keepalived_interface,
                        settings.keepalived_router_id,
                        settings.keepalived_priority,
                        host,
                        password,
                    )
                )
            except KeepalivedError as exc:
                raise EnvironmentProblem(f"keepalived: {exc}") from exc
        self._vips: tuple[str, ...] | None = None
        self._reload_pending = False  # keepalived has not been told of the file yet

    @property
    def enabled(self) -> bool:
        s = self._settings
        return bool(s.dns_hosts_file or s.dns_zone_file or s.keepalived_config)

    def publish(self, model: Model) -> None:
        """Bring every file in step with the model. Never raises: failures are logged."""
        try:
            self._publish_dns(model)
            self._publish_keepalived(model)
        except (OSError, EnvironmentProblem) as exc:
            log.error("cannot publish where services live: %s", exc)
            self._records = None  # try again with the next model
            self._vips = None

    def _publish_dns(self, model: Model) -> None:
        s = self._settings
        if not (s.dns_hosts_file or s.dns_zone_file):
            return
        found = dns.records(model, zone=self._zone)
        if found == self._records:
            return
        for finding in dns.srv_findings(model, zone=self._zone):
            log.warning("%s", finding.text)
        if s.dns_hosts_file:
            configfile.write_atomic(Path(s.dns_hosts_file), dns.hosts_file(found))
        if s.dns_zone_file:
            path, ttl_s = Path(s.dns_zone_file), s.dns_ttl_ms // 1000

            def text(serial: int) -> str:
                return dns.zone_file(
                    found, zone=self._zone, serial=serial, ttl_s=ttl_s, nameserver=self._nameserver
                )

            # A restarted controller finds its last zone: the same records keep their serial.
            if not (path.exists() and path.read_text(errors="replace") == text(self._serial)):
                self._serial = next_serial(self._serial, self._clock())
                configfile.write_atomic(path, text(self._serial))
        self._records = found
        log.info(
            "published %d DNS records%s",
            len(found),
            f" (zone serial {self._serial})" if s.dns_zone_file else "",
        )

    def _publish_keepalived(self, model: Model) -> None:
        s = self._settings
        if self._vrrp is None or not s.keepalived_config:
            return
        # The addresses this pool hands out (pool addresses, or cluster IPs the API server
        # allocated), never an external or load-balancer IP: those are whatever a Service's
        # author wrote, and the VRRP master would claim them on the segment (a gateway's, say).
        vips = tuple(sorted({ip for e in model.services for ip in e.primary}))
        if vips == self._vips and not self._reload_pending:
            return
        path = Path(s.keepalived_config)
        text = keepalived.render(vips, self._vrrp)
        current = path.read_text(errors="replace") if path.exists() else None
        if current != text:
            # 600: it may hold the VRRP password.
            configfile.write_atomic(path, text, mode=0o600)
            self._reload_pending = True
        elif path.stat().st_mode & 0o077:
            path.chmod(0o600)
        if self._reload_pending:
            self._reload_pending = not self._reload_keepalived()
        self._vips = vips

    def _reload_keepalived(self) -> bool:
        """SIGHUP to keepalived (True when sent, or when nobody is to be told: with
        `--keepalived-pidfile none`, whoever runs keepalived reloads it on a change of the file)."""
        if self._settings.keepalived_pidfile in ("none", ""):
            return True
        pidfile = Path(self._settings.keepalived_pidfile)
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError, IndexError) as exc:
            log.warning(
                "keepalived config updated, but keepalived was not reloaded (%s: %s); "
                "trying again with the next change",
                pidfile,
                exc,
            )
            return False
        log.info("reloaded keepalived (pid %d): the VIP set changed", pid)
        return True


def next_serial(previous: int, now: float) -> int:
    """A zone serial above the previous one: the time in seconds, or one more if that is not
    above (RFC 1982 arithmetic wraps at 2**32; seconds since 1970 fit until 2106)."""
    return max(previous + 1, int(now)) % 2**32
