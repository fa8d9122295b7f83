"""doctor: checks the host it runs on for what `kube2haproxy run` needs, one check per thing
that can be wrong (docs/troubleshooting-doctor.md): HAProxy and its sockets, the files the
controller writes, the VIPs (can they be bound, are they delivered here), the kernel's and the
process's limits against what the configured HAProxy will ask, the Kubernetes API and our access
to it.

Each check is a small function of its inputs, given explicitly (a `Host` with the root of the
proc tree and the process's limits, the settings, the model's listeners when manifests are
given) and returning a `Check`: ok, warn or fail, what it found, and the command that fixes it.
Nothing here changes the host: files are created and removed in the directories that must be
writable, test sockets are bound and closed, and only questions are asked of HAProxy and the
API server.
"""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from kube2haproxy import dryrun
from kube2haproxy.doctor import files, haproxy, limits, network
from kube2haproxy.doctor.check import Check, Status, as_json, text, worst
from kube2haproxy.doctor.host import Host
from kube2haproxy.doctor.kube import kube_checks
from kube2haproxy.grammar import vip_networks
from kube2haproxy.layouts import layout
from kube2haproxy.settings import Settings, resolve_paths

__all__ = ["CHECKS", "Check", "Host", "Status", "as_json", "examine", "text", "worst"]

# Every check, in the order they are printed.
CHECKS = (
    "haproxy",
    "haproxy-master",
    "haproxy-runtime",
    "haproxy-files",
    "privileged-ports",
    "vip-bind",
    "vip-routes",
    "file-descriptors",
    "somaxconn",
    "local-ports",
    "conntrack",
    "kube-api",
    "kube-access",
    "dns-files",
    "keepalived-files",
)

Socket = tuple[str, int]


def examine(
    settings: Settings,
    *,
    manifests: tuple[str, ...],
    host: Host,
    environ: Mapping[str, str],
    tmp: str,
    skip: frozenset[str] = frozenset(),
) -> list[Check]:
    """Every check not skipped, in CHECKS order. `manifests`: files whose Services give the
    model's listeners and VIPs, as `run -f` follows them (the Kubernetes API is then not
    used, as by `run -f`)."""
    paths = resolve_paths(settings, uid=host.euid, environ=dict(environ), tmp=tmp)
    listeners: dict[Socket, list[Socket]] | None = None
    if manifests:
        _findings, translation = dryrun.load_and_translate(manifests, settings)
        listeners = layout(settings.render.frontend_layout).listeners(translation.model)
    render = settings.render
    demand = limits.Demand(
        listeners=None if listeners is None else len(listeners),
        maxconn=render.maxconn,
        threads=render.nbthread or host.cpus,
    )
    networks = (
        [str(n) for n in vip_networks(settings.translate.vip_cidr)]
        if settings.translate.vip_mode == "pool" and settings.translate.vip_cidr
        else []
    )
    found: dict[str, Check] = {}
    binary = haproxy.haproxy_binary(
        settings.haproxy.binary,
        resolved=shutil.which(settings.haproxy.binary),
        transparent=render.bind_transparent,
        supervised=paths.supervised,
        root=host.euid == 0,
        worker_uid=render.worker_uid,
    )
    found["haproxy"] = binary[0]
    answered = False
    if "haproxy-master" not in skip or "haproxy-runtime" not in skip:
        found["haproxy-master"], answered = haproxy.master(
            paths.master_socket,
            supervised=paths.supervised,
            controller=haproxy.controller_pid(Path(paths.lock), host.proc),
            binary=binary[1],
        )
        found["haproxy-runtime"] = haproxy.runtime(paths.runtime_socket, master_answered=answered)
    later: dict[str, Callable[[], Check]] = {
        "haproxy-files": lambda: files.haproxy_files(paths, uid=host.euid),
        "privileged-ports": lambda: network.privileged_ports(
            host, ports=None if listeners is None else [port for _ip, port in listeners]
        ),
        "vip-bind": lambda: _vip_bind(host, listeners, networks, render.bind_transparent),
        "vip-routes": lambda: _vip_routes(
            listeners, networks, keepalived=bool(settings.publish.keepalived_config)
        ),
        "file-descriptors": lambda: limits.file_descriptors(
            host,
            demand,
            whose=(
                "this process's (inherited by the HAProxy `run` starts):"
                if paths.supervised
                else "this process's (the attached HAProxy has its own: see haproxy-master):"
            ),
        ),
        "somaxconn": lambda: limits.listen_backlog(host, demand),
        "local-ports": lambda: limits.local_ports(host, demand),
        "conntrack": lambda: limits.conntrack(host, demand),
        "dns-files": lambda: files.dns_files(settings.publish),
        "keepalived-files": lambda: files.keepalived_files(settings.publish, proc=host.proc),
    }
    for name, make in later.items():
        if name not in skip:
            found[name] = make()
    if manifests:
        why = "not used: -f follows manifest files instead of the API, as `run -f` does"
        found["kube-api"] = Check("kube-api", Status.OK, why)
        found["kube-access"] = Check("kube-access", Status.OK, why)
    elif "kube-api" not in skip or "kube-access" not in skip:
        for answer in kube_checks(settings.kube, environ=environ):
            found[answer.name] = answer
    return [found[name] for name in CHECKS if name in found and name not in skip]


def _vip_bind(
    host: Host,
    listeners: dict[Socket, list[Socket]] | None,
    networks: list[str],
    transparent: bool,
) -> Check:
    if listeners is not None:
        wanted = sorted(listeners)
        return network.vip_bind(host, wanted=wanted, sampled=False, transparent=transparent)
    addresses = network.samples(networks) if networks else [network.SAMPLE_V4]
    return network.vip_bind(
        host, wanted=[(ip, 0) for ip in addresses], sampled=True, transparent=transparent
    )


def _vip_routes(
    listeners: dict[Socket, list[Socket]] | None, networks: list[str], *, keepalived: bool
) -> Check:
    if listeners is not None:
        vips = {ip for binds in listeners.values() for ip, _port in binds}
        addresses = sorted(vips, key=lambda ip: (":" in ip, ipaddress.ip_address(ip)))
        source = "the VIPs of the -f manifests"
    elif networks:
        addresses, source = network.samples(networks), "samples of --vip-cidr"
    else:
        addresses, source = [], "no -f, so the VIPs are not known"
    return network.vip_routes(
        addresses=addresses, source=source, keepalived=keepalived, networks=networks
    )
