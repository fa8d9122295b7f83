"""Settings: one frozen tree, each field with its unit and the reason for its default.

Every field carries the command-line flag that sets it (and so its `KUBE2HAPROXY_*` environment
variable): the CLI builds its options from these declarations, so flags, environment variables and
fields map one to one and `--help` shows the defaults declared here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class ValueKind(StrEnum):
    TEXT = "text"
    INT = "int"
    DURATION = "duration"  # HAProxy duration syntax on the command line, milliseconds in the field
    FLAG = "flag"
    PATH = "path"


def _opt(flag: str, help: str, kind: ValueKind = ValueKind.TEXT, **limits: int) -> dict[str, Any]:
    return {"flag": flag, "help": help, "kind": kind, "limits": limits}


@dataclass(frozen=True, slots=True)
class TranslateSettings:
    """How Kubernetes objects become the model."""

    proxy_name: str | None = field(
        default=None,
        metadata=_opt(
            "--proxy-name",
            "Also serve Services labelled service.kubernetes.io/service-proxy-name=<this>. "
            "Unlabelled Services are always served, Services labelled for another proxy never; "
            "unset, every labelled Service is skipped, as kube-proxy does.",
        ),
    )
    # A central pool must never forward to itself: the API server rejects loopback endpoints, and
    # manifests get the same rule unless a local demo or test asks otherwise.
    allow_loopback_endpoints: bool = field(
        default=False,
        metadata=_opt(
            "--allow-loopback-endpoints",
            "Accept endpoints on 127.0.0.0/8 and ::1 (local demos and tests only).",
            ValueKind.FLAG,
        ),
    )
    # Entries are allocated on use; the size only caps memory per ClientIP-affinity service.
    affinity_table_size: int = field(
        default=100_000,
        metadata=_opt(
            "--affinity-table-size",
            "Client addresses remembered per sessionAffinity: ClientIP service (entries).",
            ValueKind.INT,
            low=1,
            high=100_000_000,
        ),
    )


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """What the templates need beyond the model: global and default HAProxy settings."""

    templates: str | None = field(
        default=None,
        metadata=_opt(
            "--templates",
            "Directory of Jinja2 templates overriding the bundled ones, file by file.",
            ValueKind.PATH,
        ),
    )
    runtime_socket: str = field(
        default="/run/haproxy/admin.sock",
        metadata=_opt(
            "--runtime-socket",
            "Path of HAProxy's stats socket (runtime API), mode 600.",
            ValueKind.PATH,
        ),
    )
    # 0 lets HAProxy derive maxconn from its file-descriptor limit, the safest default when the
    # controller cannot know the limit of the HAProxy container.
    maxconn: int = field(
        default=0,
        metadata=_opt(
            "--maxconn",
            "Global maxconn; 0 lets HAProxy derive it from its fd limit.",
            ValueKind.INT,
            low=0,
            high=10_000_000,
        ),
    )
    timeout_connect_ms: int = field(
        default=5_000,
        metadata=_opt(
            "--timeout-connect",
            "Default time to establish a connection to an endpoint.",
            ValueKind.DURATION,
        ),
    )
    timeout_client_ms: int = field(
        default=60_000,
        metadata=_opt(
            "--timeout-client",
            "Default client inactivity timeout before the tunnel is up.",
            ValueKind.DURATION,
        ),
    )
    timeout_server_ms: int = field(
        default=60_000,
        metadata=_opt(
            "--timeout-server",
            "Default server inactivity timeout before the tunnel is up.",
            ValueKind.DURATION,
        ),
    )
    # kube-proxy leaves idle connections to conntrack, whose established timeout it sets to 24h;
    # a shorter default would cut idle database pools that work under kube-proxy.
    timeout_tunnel_ms: int = field(
        default=86_400_000,
        metadata=_opt(
            "--timeout-tunnel",
            "Default inactivity timeout of an established TCP connection.",
            ValueKind.DURATION,
        ),
    )


@dataclass(frozen=True, slots=True)
class HAProxySettings:
    """How we run HAProxy itself."""

    binary: str = field(
        default="haproxy",
        metadata=_opt(
            "--haproxy-bin", "The haproxy executable (a name on PATH or a path).", ValueKind.PATH
        ),
    )
    # 50,000 services take ~5 s to check on two cores; two minutes leaves room for slow disks.
    check_timeout_ms: int = field(
        default=120_000,
        metadata=_opt(
            "--check-timeout",
            "Longest `haproxy -c` may run before it counts as failed.",
            ValueKind.DURATION,
        ),
    )


@dataclass(frozen=True, slots=True)
class Settings:
    translate: TranslateSettings = field(default_factory=TranslateSettings)
    render: RenderSettings = field(default_factory=RenderSettings)
    haproxy: HAProxySettings = field(default_factory=HAProxySettings)


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One settings field as a command-line option."""

    section: str
    name: str
    flag: str
    help: str
    kind: ValueKind
    default: Any
    limits: dict[str, int]

    @property
    def envvar(self) -> str:
        return "KUBE2HAPROXY_" + self.flag.lstrip("-").upper().replace("-", "_")


_SECTIONS: dict[str, type[TranslateSettings | RenderSettings | HAProxySettings]] = {
    "translate": TranslateSettings,
    "render": RenderSettings,
    "haproxy": HAProxySettings,
}


def option_specs(sections: tuple[str, ...] | None = None) -> list[OptionSpec]:
    """The options of the given sections of `Settings` (all when None), in declaration order."""
    specs = []
    for section, section_type in _SECTIONS.items():
        if sections is not None and section not in sections:
            continue
        for f in fields(section_type):
            meta = f.metadata
            specs.append(
                OptionSpec(
                    section,
                    f.name,
                    meta["flag"],
                    meta["help"],
                    meta["kind"],
                    f.default,
                    dict(meta["limits"]),
                )
            )
    return specs


def build(values: dict[str, Any]) -> Settings:
    """Settings from option values keyed by field name (missing keys keep their defaults).
    Field names are unique across sections, so one flat namespace of options suffices."""
    parts: dict[str, Any] = {}
    for section, section_type in _SECTIONS.items():
        names = {f.name for f in fields(section_type)}
        parts[section] = section_type(**{k: v for k, v in values.items() if k in names})
    return Settings(**parts)
