"""dns: where services live, as DNS records: a hosts file and an RFC 1035 zone file.

For every served service, `<service>.<namespace>.svc.<zone>` has an A or AAAA record per primary
address (its cluster IPs, or its pool addresses in pool mode), and every named TCP port an SRV
record `_<port>._tcp.<service>.<namespace>.svc.<zone>` pointing at that name, as Kubernetes DNS
publishes them. Pure: every name is built from validated DNS labels, every address from
canonical IP literals; the serial of the zone is the caller's (it must increase on every change).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kube2haproxy.errors import ZoneError
from kube2haproxy.findings import Finding, subject, warning
from kube2haproxy.model import Model

_ZONE = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)


# A DNS name has at most 253 characters and each label at most 63. The zone is capped so that
# every address record `<service>.<namespace>.svc.<zone>` fits with room to spare (services and
# namespaces have up to 63 characters each); an SRV record `_<port>._tcp.<that name>` of a
# long port name (a DNS label, up to 63 characters) may still not fit: it is left out, and
# reported (srv_findings).
MAX_ZONE = 99
MAX_NAME = 253
MAX_LABEL = 63


def check_zone(zone: str) -> str:
    """A DNS name of lowercase labels (cluster.local), short enough that every record's name
    fits; ZoneError otherwise."""
    zone = zone.rstrip(".")
    if not _ZONE.fullmatch(zone):
        raise ZoneError(f"{zone!r}: expected a DNS name such as cluster.local")
    if len(zone) > MAX_ZONE:
        raise ZoneError(
            f"{zone[:40]!r}...: {len(zone)} characters; at most {MAX_ZONE}, so that every "
            "record's name stays within DNS's 253"
        )
    return zone


def check_nameserver(name: str) -> str:
    """The host name of the zone's name server (SOA and NS records); ZoneError otherwise."""
    name = name.rstrip(".")
    if not _ZONE.fullmatch(name) or len(name) > 253:
        raise ZoneError(f"{name!r}: expected a host name such as ns1.example.org")
    return name


@dataclass(frozen=True, slots=True, order=True)
class Record:
    name: str  # fully qualified, without the final dot
    type: str  # A, AAAA or SRV
    value: str  # an address, or "priority weight port target." for SRV


def records(model: Model, *, zone: str) -> list[Record]:
    """The records of every served service, sorted."""
    out = []
    for entry in model.services:
        fqdn = f"{entry.name}.{entry.namespace}.svc.{zone}"
        for ip in entry.primary:
            out.append(Record(fqdn, "AAAA" if ":" in ip else "A", ip))
        if not entry.primary:
            continue
        for port in entry.ports:
            name = _srv_name(port.name, fqdn)
            if name is not None:
                out.append(Record(name, "SRV", f"0 100 {port.port} {fqdn}."))
    # Each service's addresses, then its SRV records.
    return sorted(out, key=lambda r: (r.name.rpartition("._tcp.")[2], r.type == "SRV", r))


def _srv_name(port: str, fqdn: str) -> str | None:
    """The SRV record name of a named port, or None (unnamed, or too long for DNS)."""
    name = f"_{port}._tcp.{fqdn}"
    if not port or len(port) + 1 > MAX_LABEL or len(name) > MAX_NAME:
        return None
    return name


def srv_findings(model: Model, *, zone: str) -> list[Finding]:
    """The named ports whose SRV record cannot be published: the name would pass DNS's limits."""
    out = []
    for entry in model.services:
        fqdn = f"{entry.name}.{entry.namespace}.svc.{zone}"
        for port in entry.ports:
            if entry.primary and port.name and _srv_name(port.name, fqdn) is None:
                out.append(
                    warning(
                        subject("Service", entry.namespace, entry.name),
                        f"port {port.name}",
                        f"no SRV record: _{port.name}._tcp.{fqdn} is longer than DNS allows "
                        f"({MAX_LABEL} characters a label, {MAX_NAME} a name)",
                    )
                )
    return out


# What a finding must be about to change the records: the service's name and namespace, its
# ports, its addresses (cluster IPs or pool addresses; address conflicts), whether it is
# served at all; or the input files themselves. Endpoints and tuning do not matter here.
_DNS_FIELDS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.labels",
    "spec.ports",
    "spec.clusterIP",
    "spec.type",
    "metadata.annotations[kube2haproxy.io/vip]",
    "port ",
)


def relevant(finding: Finding) -> bool:
    """Whether a finding concerns what `dns` publishes."""
    if not finding.subject.startswith(("Service ", "EndpointSlice ", "Endpoints ")):
        return True  # about an input file
    if not finding.subject.startswith("Service "):
        return False
    return finding.field in ("", "spec") or finding.field.startswith(_DNS_FIELDS)


def hosts_file(found: Sequence[Record]) -> str:
    """`address name` lines, the format of /etc/hosts and CoreDNS's `hosts` plugin."""
    lines = [f"{r.value} {r.name}\n" for r in found if r.type in ("A", "AAAA")]
    return "# Generated by kube2haproxy: the services' addresses on the HAProxy pool.\n" + "".join(
        lines
    )


def zone_file(
    found: Sequence[Record], *, zone: str, serial: int, ttl_s: int, nameserver: str = "localhost"
) -> str:
    """An RFC 1035 master file for `zone`, for CoreDNS's `file` plugin or any DNS server.

    `nameserver` (checked by check_nameserver) is the SOA's primary and the zone's NS record.
    The default, `localhost`, lies outside every zone we write, so BIND's and Knot's integrity
    checks load the zone without an address record for it; a delegated zone names its server."""
    head = [
        "; Generated by kube2haproxy: the services' addresses on the HAProxy pool.\n",
        f"$ORIGIN {zone}.\n",
        f"$TTL {ttl_s}\n",
        f"@ IN SOA {nameserver}. hostmaster.{zone}. ({serial} 7200 1800 86400 {ttl_s})\n",
        f"@ IN NS {nameserver}.\n",
    ]
    suffix = f".{zone}"
    body = [f"{r.name.removesuffix(suffix)} IN {r.type} {r.value}\n" for r in found]
    return "".join(head + body)


def serial_of(text: str) -> int | None:
    """The serial of a zone file we wrote, or None."""
    match = re.search(r"^@ IN SOA \S+ \S+ \((\d+) ", text, re.M)
    return int(match.group(1)) if match else None
