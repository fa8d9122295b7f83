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
from kube2haproxy.errors import EnvironmentProblem
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
            except keepalived.KeepalivedError as exc:
                raise EnvironmentProblem(f"keepalived: {exc}") from exc
        self._vips: tuple[str, ...] | None = None

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
        if s.dns_hosts_file:
            configfile.write_atomic(Path(s.dns_hosts_file), dns.hosts_file(found))
        if s.dns_zone_file:
            path, ttl_s = Path(s.dns_zone_file), s.dns_ttl_ms // 1000
            # A restarted controller finds its last zone: the same records keep their serial.
            same = dns.zone_file(found, zone=self._zone, serial=self._serial, ttl_s=ttl_s)
            if not (path.exists() and path.read_text(errors="replace") == same):
                self._serial = next_serial(self._serial, self._clock())
                configfile.write_atomic(
                    path, dns.zone_file(found, zone=self._zone, serial=self._serial, ttl_s=ttl_s)
                )
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
        # Every address HAProxy listens on must reach this host: pool or cluster IPs, and the
        # external and load-balancer IPs too.
        vips = tuple(sorted({ip for e in model.services for ip in e.vips}))
        if vips == self._vips:
            return
        path = Path(s.keepalived_config)
        text = keepalived.render(vips, self._vrrp)
        if not path.exists() or path.read_text(errors="replace") != text:
            # 600: it may hold the VRRP password.
            configfile.write_atomic(path, text, mode=0o600)
            self._reload_keepalived()
        self._vips = vips

    def _reload_keepalived(self) -> None:
        pidfile = Path(self._settings.keepalived_pidfile)
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError, IndexError) as exc:
            log.warning(
                "keepalived config updated, but keepalived was not reloaded (%s: %s)", pidfile, exc
            )
            return
        log.info("reloaded keepalived (pid %d): the VIP set changed", pid)


def next_serial(previous: int, now: float) -> int:
    """A zone serial above the previous one: the time in seconds, or one more if that is not
    above (RFC 1982 arithmetic wraps at 2**32; seconds since 1970 fit until 2106)."""
    return max(previous + 1, int(now)) % 2**32
