"""Settings: one frozen tree of sections grouped by meaning, each field with its unit and the
reason for its default, and the rules that join fields (`check`).

Every field declares the command-line flag that sets it (options.py), and so its
`KUBE2HAPROXY_*` environment variable: the CLI builds its options from these declarations, so
flags, environment variables and fields map one to one and `--help` shows the defaults
declared here. Settings are built once (`build`) and never rewritten: what depends on the mode
and the user (where the run directory is, which config file) is resolved beside them
(`resolve_paths`), not into them.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from kube2haproxy import dns, grammar, keepalived
from kube2haproxy.errors import InvalidValue
from kube2haproxy.layouts import LAYOUTS
from kube2haproxy.options import OptionSpec, ValueKind, option_specs, sections_from
from kube2haproxy.options import option as _opt


@dataclass(frozen=True, slots=True)
class TranslateSettings:
    """What is served, and how services become the model."""

    proxy_name: str | None = field(
        default=None,
        metadata=_opt(
            "--proxy-name",
            "Also serve Services labelled service.kubernetes.io/service-proxy-name=<this>. "
            "Unlabelled Services are always served, Services labelled for another proxy never; "
            "unset, every labelled Service is skipped, as kube-proxy does.",
        ),
    )
    vip_mode: str = field(
        default="cluster-ip",
        metadata=_opt(
            "--vip-mode",
            "cluster-ip: listen on each service's clusterIPs (route the service CIDR to the pool); "
            "pool: give each service an address from --vip-cidr.",
            ValueKind.CHOICE,
            choices=("cluster-ip", "pool"),
        ),
    )
    vip_cidr: str | None = field(
        default=None,
        metadata=_opt(
            "--vip-cidr",
            "The pool's networks for --vip-mode pool: comma-separated, at most one IPv4 and one "
            "IPv6 (each service gets an address from each).",
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
    # A rolling update of 10 replicas with maxSurge 25% lists 13 endpoints: 4 free slots absorb
    # it without a reload. Each server line costs ~5.3 KB of worker memory; blocks of 8 keep the
    # count coarse, so scaling by one seldom changes it.
    slots_free: int = field(
        default=4,
        metadata=_opt(
            "--slots-free",
            "Free server slots each backend keeps beyond its listed endpoints, for endpoint "
            "changes without a reload (per service: kube2haproxy.io/slots-free).",
            ValueKind.INT,
            low=0,
            high=1000,
        ),
    )
    slots_block: int = field(
        default=8,
        metadata=_opt(
            "--slots-block",
            "Server slots are added and removed in blocks of this many.",
            ValueKind.INT,
            low=1,
            high=1000,
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
    """The haproxy.cfg rendered: its templates, the frontend layout, global and default
    settings of HAProxy."""

    templates: str | None = field(
        default=None,
        metadata=_opt(
            "--templates",
            "Directory of Jinja2 templates overriding the bundled ones, file by file.",
            ValueKind.PATH,
        ),
    )
    # Per-service: one socket per VIP and port (60,000 at 50,000 services, which did not start
    # under a 20,000 descriptor limit: bench/layout.py).
    frontend_layout: str = field(
        default="per-service",
        metadata=_opt(
            "--frontend-layout",
            "per-service: a frontend per service port on its VIPs; per-port: a frontend per "
            "distinct port on every address, routing on the destination through a map (sockets "
            "grow with ports, not services).",
            ValueKind.CHOICE,
            choices=tuple(LAYOUTS),
        ),
    )
    # An empty backend costs ~10 KB of worker memory on 2.6 and ~4 KB on 3.4 (bench/memory.py
    # --spare-backends): 500 cover a burst of new services between two reloads for ~5 MB.
    spare_backends: int = field(
        default=500,
        metadata=_opt(
            "--spare-backends",
            "Empty backends the config carries for new services (per-port layout): a new "
            "service on a port already listened on takes one at runtime, without a reload; "
            "the next reload gives it its own and refills the pool.",
            ValueKind.INT,
            low=0,
            high=100_000,
        ),
    )
    # A pool member must be able to listen on VIPs it does not hold yet: a VRRP backup, or a
    # host whose service CIDR is routed but not configured. HAProxy's `transparent` sets
    # IP_TRANSPARENT, or IP_FREEBIND without CAP_NET_ADMIN: no privilege is needed.
    bind_transparent: bool = field(
        default=True,
        metadata=_opt(
            "--bind-transparent",
            "Listen on VIPs not configured on this host (HAProxy's `transparent` bind option).",
            ValueKind.FLAG,
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
    # Each thread holds its own per-server state: a worker's memory grows with its threads
    # (bench/README.md's figures are for two). 0 keeps HAProxy's own choice, one per CPU it may use.
    nbthread: int = field(
        default=0,
        metadata=_opt(
            "--nbthread",
            "HAProxy worker threads; 0 lets HAProxy use one per CPU available to it.",
            ValueKind.INT,
            low=0,
            high=64,
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
    # After a reload, old workers finish their connections. With 24 h tunnels they could live a
    # day, each holding a whole config (about 1.1 GB at 10,000 services, bench/README.md,
    # "Serving"); ten minutes bounds memory and still lets ordinary requests and most streams
    # finish.
    hard_stop_after_ms: int = field(
        default=600_000,
        metadata=_opt(
            "--hard-stop-after",
            "Longest an old worker may keep serving its connections after a reload.",
            ValueKind.DURATION,
        ),
    )
    mworker_max_reloads: int = field(
        default=20,
        metadata=_opt(
            "--mworker-max-reloads",
            "Reloads an old worker may survive before the master stops it.",
            ValueKind.INT,
            low=1,
            high=1000,
        ),
    )
    # HAProxy started as root binds its listeners, then its workers (which face the network)
    # drop to this user: the master alone stays root. 3.3 and later warn at every start and
    # reload of a root worker without `uid` (or `user`) and, 3.4, without `chroot`.
    worker_uid: int | None = field(
        default=None,
        metadata=_opt(
            "--haproxy-uid",
            "Numeric user HAProxy's workers run as (global `uid`); unset: HAProxy's own user.",
            ValueKind.INT,
            low=0,
            high=2**31 - 1,
        ),
    )
    worker_gid: int | None = field(
        default=None,
        metadata=_opt(
            "--haproxy-gid",
            "Numeric group HAProxy's workers run as (global `gid`); unset: HAProxy's own group.",
            ValueKind.INT,
            low=0,
            high=2**31 - 1,
        ),
    )
    chroot: str | None = field(
        default=None,
        metadata=_opt(
            "--haproxy-chroot",
            "Directory HAProxy's workers are confined to once started (global `chroot`; an "
            "empty one, such as /var/empty); unset: none.",
            ValueKind.PATH,
        ),
    )


@dataclass(frozen=True, slots=True)
class PathSettings:
    """Where HAProxy's files and sockets are. Unset ones are derived (`resolve_paths`)."""

    haproxy_config: str | None = field(
        default=None,
        metadata=_opt(
            "--haproxy-config",
            "The haproxy.cfg the controller writes. Unset: <run-dir>/haproxy.cfg when supervised "
            "or with --applier dataplane (a copy of what the API was given), "
            "/etc/haproxy/haproxy.cfg when attached. (--config: the former name.)",
            ValueKind.PATH,
            aliases=("--config",),
        ),
    )
    run_dir: str | None = field(
        default=None,
        metadata=_opt(
            "--run-dir",
            "Directory for the supervised HAProxy's config and sockets. Unset: "
            "/run/kube2haproxy as root, else $XDG_RUNTIME_DIR/kube2haproxy or "
            "/tmp/kube2haproxy-<uid>.",
            ValueKind.PATH,
        ),
    )
    master_socket: str | None = field(
        default=None,
        metadata=_opt(
            "--master-socket",
            "Attach to a running HAProxy through this master CLI socket. Unset: run HAProxy "
            "ourselves (supervised), with --haproxy-bin.",
            ValueKind.PATH,
        ),
    )
    runtime_socket: str | None = field(
        default=None,
        metadata=_opt(
            "--runtime-socket",
            "Path of HAProxy's stats socket (runtime API), mode 600. Unset: admin.sock beside "
            "the master socket (render and --applier dataplane: /run/haproxy/admin.sock).",
            ValueKind.PATH,
        ),
    )
    maps_dir: str | None = field(
        default=None,
        metadata=_opt(
            "--maps-dir",
            "Where the per-port layout's map files go (absolute). Unset: maps/ beside the config "
            "(render to standard output, and --applier dataplane, the API's maps_dir: "
            "/etc/haproxy/maps).",
            ValueKind.PATH,
        ),
    )


@dataclass(frozen=True, slots=True)
class HAProxySettings:
    """The HAProxy executable, and how long it may take to check and to load a config."""

    binary: str = field(
        default="haproxy",
        metadata=_opt(
            "--haproxy-bin", "The haproxy executable (a name on PATH or a path).", ValueKind.PATH
        ),
    )
    # 50,000 services take ~9 s to check on two cores (bench/render.py); two minutes leaves
    # room for slow disks.
    check_timeout_ms: int = field(
        default=120_000,
        metadata=_opt(
            "--check-timeout",
            "Longest `haproxy -c` may run before it counts as failed.",
            ValueKind.DURATION,
        ),
    )
    # 10,000 services reload in several seconds on two cores (bench/README.md "Serving": ~7 s of a
    # 9 s convergence); a minute leaves room for 50,000.
    reload_timeout_ms: int = field(
        default=60_000,
        metadata=_opt(
            "--reload-timeout",
            "Longest a reload may take before it counts as failed.",
            ValueKind.DURATION,
        ),
    )


APPLIERS = ("master-cli", "dataplane")


@dataclass(frozen=True, slots=True)
class ApplierSettings:
    """How configs reach HAProxy: its master CLI and stats socket, or HAProxy's Data Plane API
    (`run` only)."""

    kind: str = field(
        default="master-cli",
        metadata=_opt(
            "--applier",
            "master-cli: drive HAProxy through its master CLI and stats socket (supervised or "
            "--master-socket); dataplane: through HAProxy's Data Plane API (--dataplane-url).",
            ValueKind.CHOICE,
            choices=APPLIERS,
        ),
    )
    dataplane_url: str | None = field(
        default=None,
        metadata=_opt(
            "--dataplane-url",
            "Base URL of the Data Plane API, http[s]://host:port (its v3 API is under /v3); "
            "--applier dataplane only.",
        ),
    )
    dataplane_username: str | None = field(
        default=None,
        metadata=_opt("--dataplane-username", "The Data Plane API user (HTTP basic auth)."),
    )
    # A file, never a flag or a variable: a password on a command line is visible to every
    # user of the host (ps), and in a pod spec to everyone who may read it.
    dataplane_password_file: str | None = field(
        default=None,
        metadata=_opt(
            "--dataplane-password-file",
            "File holding the Data Plane API user's password (one trailing newline ignored).",
            ValueKind.PATH,
        ),
    )
    dataplane_tls_verify: bool = field(
        default=True,
        metadata=_opt(
            "--dataplane-tls-verify",
            "Verify the Data Plane API's TLS certificate (https URLs).",
            ValueKind.FLAG,
        ),
    )
    dataplane_ca_file: str | None = field(
        default=None,
        metadata=_opt(
            "--dataplane-ca-file",
            "CA certificates (PEM) the Data Plane API's certificate is verified against; unset: "
            "the system's.",
            ValueKind.PATH,
        ),
    )
    # The controller debounces changes itself; the API's queue (reload_delay, 5 s by default)
    # would only add latency, and a forced reload answers with its outcome.
    dataplane_force_reload: bool = field(
        default=True,
        metadata=_opt(
            "--dataplane-force-reload",
            "Reload at once on each push and take the answer as the outcome; off: the API "
            "queues the reload (its reload_delay) and it is followed by its id.",
            ValueKind.FLAG,
        ),
    )
    # Every runtime call answers in milliseconds; a config push waits longer (the API checks
    # the config and reloads): --check-timeout plus --reload-timeout on top of this.
    dataplane_timeout_ms: int = field(
        default=10_000,
        metadata=_opt(
            "--dataplane-timeout",
            "Longest wait for a Data Plane API answer (a config push: plus --check-timeout and "
            "--reload-timeout).",
            ValueKind.DURATION,
        ),
    )


@dataclass(frozen=True, slots=True)
class TimingSettings:
    """When the controller acts: debounces, retries, drift checks (`run` only)."""

    debounce_ms: int = field(
        default=100,
        metadata=_opt(
            "--debounce",
            "Quiet period after a change before it is applied (a storm of changes is one apply).",
            ValueKind.DURATION,
        ),
    )
    max_delay_ms: int = field(
        default=1_000,
        metadata=_opt(
            "--max-delay",
            "Longest a pending change waits for the quiet period.",
            ValueKind.DURATION,
        ),
    )
    # Endpoint churn goes out through the runtime API: wait just long enough to take a burst
    # of slice updates (a rollout step) as one batch.
    runtime_debounce_ms: int = field(
        default=10,
        metadata=_opt(
            "--runtime-debounce",
            "Quiet period before endpoint changes that need no reload are applied.",
            ValueKind.DURATION,
        ),
    )
    drift_check_interval_ms: int = field(
        default=60_000,
        metadata=_opt(
            "--drift-check-interval",
            "How often to compare HAProxy's servers with the model (also after every reload); "
            "0 disables. (--drift-check: the former name.)",
            ValueKind.DURATION,
            aliases=("--drift-check",),
            low=0,
        ),
    )
    retry_interval_ms: int = field(
        default=5_000,
        metadata=_opt(
            "--retry-interval",
            "First wait before retrying a failed apply; doubles up to 2 minutes. (--retry: the "
            "former name.)",
            ValueKind.DURATION,
            aliases=("--retry",),
        ),
    )


@dataclass(frozen=True, slots=True)
class ObserveSettings:
    """How the controller is watched: its probes and metrics, its logs (`run` only)."""

    # One address serves the probes and the metrics: kube-proxy's two flags name the same
    # listener here (one small HTTP server, nothing to keep apart).
    listen: str = field(
        default="127.0.0.1:9333",
        metadata=_opt(
            "--listen",
            "host:port of /healthz, /readyz, /metrics and /status (an empty value disables them). "
            "--healthz-bind-address and --metrics-bind-address (kube-proxy's names) set it too.",
            aliases=("--healthz-bind-address", "--metrics-bind-address"),
        ),
    )
    # What `kube2haproxy status` and `explain` ask: every service's addresses, endpoints and
    # pods, to whoever reaches --listen (loopback by default; a pod IP in the DaemonSet).
    serve_status: bool = field(
        default=True,
        metadata=_opt(
            "--serve-status",
            "Also serve /status (JSON) and / (HTML) on --listen: every service's VIPs, "
            "endpoints and pods, for `kube2haproxy status` and `explain`, to whoever reaches it.",
            ValueKind.FLAG,
        ),
    )
    log_format: str = field(
        default="plain",
        metadata=_opt(
            "--log-format",
            "Log lines as plain text or JSON objects.",
            ValueKind.CHOICE,
            choices=("plain", "json"),
        ),
    )
    log_level: str = field(
        default="info",
        metadata=_opt(
            "--log-level",
            "Least severe level logged.",
            ValueKind.CHOICE,
            choices=("debug", "info", "warning", "error"),
        ),
    )


@dataclass(frozen=True, slots=True)
class KubeSettings:
    """How the Kubernetes API is reached and watched (`run` without -f)."""

    kubeconfig: str | None = field(
        default=None,
        metadata=_opt(
            "--kubeconfig",
            "kubeconfig file. Unset: the in-cluster service account, else $KUBECONFIG or "
            "~/.kube/config.",
            ValueKind.PATH,
        ),
    )
    context: str | None = field(
        default=None, metadata=_opt("--context", "kubeconfig context (unset: the current one).")
    )
    namespace: str | None = field(
        default=None,
        metadata=_opt(
            "--namespace",
            "Watch one namespace only (unset: all namespaces).",
            aliases=("-n",),
        ),
    )
    label_selector: str | None = field(
        default=None,
        metadata=_opt(
            "--selector",
            "Watch only Services matching this label selector, as kubectl's -l "
            "(--label-selector: the former name).",
            aliases=("-l", "--label-selector"),
        ),
    )
    watch_endpoints: bool = field(
        default=False,
        metadata=_opt(
            "--watch-endpoints",
            "Also watch v1 Endpoints, for services without EndpointSlices (clusters older "
            "than 1.21).",
            ValueKind.FLAG,
        ),
    )
    # The API server ends a watch after this; the client gives up on a silent connection 30 s
    # later, so a dead TCP peer is noticed within 2.5 minutes.
    watch_timeout_ms: int = field(
        default=120_000,
        metadata=_opt(
            "--watch-timeout",
            "Server-side timeout of each watch request (the client waits 30 s longer).",
            ValueKind.DURATION,
        ),
    )
    page_size: int = field(
        default=500,
        metadata=_opt(
            "--page-size",
            "Objects per page of the initial list.",
            ValueKind.INT,
            low=1,
            high=100_000,
        ),
    )
    backoff_max_ms: int = field(
        default=30_000,
        metadata=_opt(
            "--backoff-max",
            "Longest wait between two reconnections to the API (exponential, with jitter).",
            ValueKind.DURATION,
        ),
    )


@dataclass(frozen=True, slots=True)
class PublishSettings:
    """Where services live, published: DNS records and the VRRP configuration (`run`; the DNS
    zone and TTL also for `dns`)."""

    dns_zone: str = field(
        default="cluster.local",
        metadata=_opt("--dns-zone", "Records are <service>.<namespace>.svc.<this zone>."),
    )
    dns_nameserver: str = field(
        default="localhost",
        metadata=_opt(
            "--dns-nameserver",
            "The zone file's name server (SOA and NS records): "
            "the DNS server's own name when the zone is delegated to it.",
        ),
    )
    # The controller updates the files within a second of a change; resolvers may cache as
    # long as this.
    dns_ttl_ms: int = field(
        default=30_000,
        metadata=_opt("--dns-ttl", "TTL of the records.", ValueKind.DURATION, low=1_000),
    )
    dns_hosts_file: str | None = field(
        default=None,
        metadata=_opt(
            "--dns-hosts-file", "Keep this hosts file (CoreDNS `hosts`) up to date.", ValueKind.PATH
        ),
    )
    dns_zone_file: str | None = field(
        default=None,
        metadata=_opt(
            "--dns-zone-file",
            "Keep this RFC 1035 zone file (CoreDNS `file`) up to "
            "date; its serial increases on every change.",
            ValueKind.PATH,
        ),
    )
    keepalived_config: str | None = field(
        default=None,
        metadata=_opt(
            "--keepalived-config",
            "Keep this keepalived.conf up to date with the pool's "
            "addresses (VRRP failover: pool addresses or cluster IPs, never external or "
            "load-balancer IPs) and reload keepalived when they change.",
            ValueKind.PATH,
        ),
    )
    keepalived_interface: str | None = field(
        default=None,
        metadata=_opt(
            "--keepalived-interface",
            "The interface VRRP runs on and the VIPs go to (required with --keepalived-config).",
        ),
    )
    keepalived_router_id: int = field(
        default=51,
        metadata=_opt(
            "--keepalived-router-id",
            "VRRP virtual router id of the IPv4 VIPs (the "
            "IPv6 ones use the next); the same on every host of a pool.",
            ValueKind.INT,
            low=1,
            high=254,
        ),
    )
    keepalived_priority: int = field(
        default=100,
        metadata=_opt(
            "--keepalived-priority",
            "This host's VRRP priority (the highest alive holds the VIPs).",
            ValueKind.INT,
            low=1,
            high=254,
        ),
    )
    keepalived_password_file: str | None = field(
        default=None,
        metadata=_opt(
            "--keepalived-password-file",
            "File holding the VRRP password (1-8 characters); unset: no authentication.",
            ValueKind.PATH,
        ),
    )
    keepalived_pidfile: str = field(
        default="/run/keepalived.pid",
        metadata=_opt(
            "--keepalived-pidfile",
            "keepalived's pid file: it gets SIGHUP (reload) when the VIP set changes; `none`: "
            "send no signal (whoever runs keepalived reloads it when the file changes).",
            ValueKind.PATH,
        ),
    )


@dataclass(frozen=True, slots=True)
class Settings:
    translate: TranslateSettings = field(default_factory=TranslateSettings)
    render: RenderSettings = field(default_factory=RenderSettings)
    paths: PathSettings = field(default_factory=PathSettings)
    haproxy: HAProxySettings = field(default_factory=HAProxySettings)
    applier: ApplierSettings = field(default_factory=ApplierSettings)
    timing: TimingSettings = field(default_factory=TimingSettings)
    observe: ObserveSettings = field(default_factory=ObserveSettings)
    kube: KubeSettings = field(default_factory=KubeSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)


SECTIONS: dict[str, type[Any]] = {
    "translate": TranslateSettings,
    "render": RenderSettings,
    "paths": PathSettings,
    "haproxy": HAProxySettings,
    "applier": ApplierSettings,
    "timing": TimingSettings,
    "observe": ObserveSettings,
    "kube": KubeSettings,
    "publish": PublishSettings,
}


def specs(sections: tuple[str, ...] | None = None) -> list[OptionSpec]:
    """The options of the given sections (all when None), in declaration order."""
    return option_specs(SECTIONS, sections)


class SettingError(InvalidValue):
    """A setting that cannot be used, alone or with the others; `flag` names it."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


def build(values: dict[str, Any]) -> tuple[Settings, tuple[str, ...]]:
    """Settings from option values keyed by field name (missing keys keep their defaults),
    checked, with the notes worth telling the user (a setting that has no effect).
    SettingError for what cannot be used."""
    settings = Settings(**sections_from(SECTIONS, values))
    return settings, check(settings)


def check(settings: Settings) -> tuple[str, ...]:
    """The rules that join fields, and the grammars of fields that are ours; the notes."""
    notes = []
    translate = settings.translate
    if translate.vip_mode == "pool":
        if not translate.vip_cidr:
            raise SettingError("--vip-cidr", "--vip-mode pool needs --vip-cidr")
        try:
            grammar.vip_networks(translate.vip_cidr)
        except InvalidValue as exc:
            raise SettingError("--vip-cidr", f"{translate.vip_cidr!r}: {exc}") from exc
    elif translate.vip_cidr:
        notes.append(
            f"--vip-cidr is ignored with --vip-mode {translate.vip_mode} (it is the pool of "
            "--vip-mode pool)"
        )
    publish = settings.publish
    for flag, validate, value in (
        ("--dns-zone", dns.check_zone, publish.dns_zone),
        ("--dns-nameserver", dns.check_nameserver, publish.dns_nameserver),
    ):
        try:
            validate(value)
        except InvalidValue as exc:
            raise SettingError(flag, str(exc)) from exc
    if publish.keepalived_config:
        if not publish.keepalived_interface:
            raise SettingError(
                "--keepalived-interface", "--keepalived-config needs --keepalived-interface"
            )
        try:
            keepalived.check_interface(publish.keepalived_interface)
        except InvalidValue as exc:
            raise SettingError("--keepalived-interface", str(exc)) from exc
    if settings.observe.listen:
        try:
            parse_listen(settings.observe.listen)
        except ValueError as exc:
            raise SettingError("--listen", str(exc)) from exc
    notes.extend(_check_applier(settings))
    return tuple(notes)


# http[s]://host[:port][/path]: no user information (credentials have flags of their own), no
# query or fragment (the API's paths are appended).
_URL = re.compile(r"(?P<scheme>https?)://(?P<authority>[^/?#\s]+)(?P<path>/[^?#\s]*)?")


def _check_applier(settings: Settings) -> list[str]:
    """--applier and the flags that go with it; the notes about flags it ignores."""
    applier, notes = settings.applier, []
    dataplane_flags = [
        flag
        for flag, value in (
            ("--dataplane-url", applier.dataplane_url),
            ("--dataplane-username", applier.dataplane_username),
            ("--dataplane-password-file", applier.dataplane_password_file),
            ("--dataplane-ca-file", applier.dataplane_ca_file),
            ("--no-dataplane-tls-verify", not applier.dataplane_tls_verify),
        )
        if value
    ]
    if applier.kind != "dataplane":
        if dataplane_flags:
            notes.append(f"{', '.join(dataplane_flags)} ignored with --applier {applier.kind}")
        return notes
    for flag, value in (
        ("--dataplane-url", applier.dataplane_url),
        ("--dataplane-username", applier.dataplane_username),
        ("--dataplane-password-file", applier.dataplane_password_file),
    ):
        if not value:
            raise SettingError(flag, f"--applier dataplane needs {flag}")
    url = _URL.fullmatch(applier.dataplane_url or "")
    if url is None:
        raise SettingError(
            "--dataplane-url",
            f"{applier.dataplane_url!r}: expected http://host:port or https://host:port",
        )
    if "@" in url["authority"]:  # never echoed: it may hold a password
        raise SettingError(
            "--dataplane-url",
            "credentials do not go in the URL: give --dataplane-username and "
            "--dataplane-password-file",
        )
    if settings.paths.master_socket:
        notes.append("--master-socket is ignored with --applier dataplane")
    if applier.dataplane_ca_file and not applier.dataplane_tls_verify:
        notes.append("--dataplane-ca-file is ignored with --no-dataplane-tls-verify")
    elif applier.dataplane_ca_file and url["scheme"] == "http":
        notes.append("--dataplane-ca-file is ignored with an http:// --dataplane-url")
    return notes


@dataclass(frozen=True, slots=True)
class Paths:
    """Where the running controller's files and sockets are, once the unset defaults resolved."""

    supervised: bool
    config: str
    master_socket: str
    runtime_socket: str
    run_dir: str | None
    maps_dir: str  # the per-port layout's map files: --maps-dir, else maps/ beside the config
    lock: str  # one controller per HAProxy: in the run directory, else <config>.lock


def resolve_paths(settings: Settings, *, uid: int, environ: dict[str, str], tmp: str) -> Paths:
    """Fill in the defaults that depend on the mode and the user (see the flags' help)."""
    paths = settings.paths
    dataplane = settings.applier.kind == "dataplane"
    if paths.master_socket is None or dataplane:
        if paths.run_dir is not None:
            run_dir = paths.run_dir
        elif uid == 0:
            run_dir = "/run/kube2haproxy"
        elif environ.get("XDG_RUNTIME_DIR"):
            run_dir = environ["XDG_RUNTIME_DIR"] + "/kube2haproxy"
        else:
            run_dir = f"{tmp}/kube2haproxy-{uid}"
        master = f"{run_dir}/master.sock"
        config = paths.haproxy_config or f"{run_dir}/haproxy.cfg"
    else:
        run_dir = None
        master = paths.master_socket
        config = paths.haproxy_config or "/etc/haproxy/haproxy.cfg"
    runtime = paths.runtime_socket or posixpath.join(posixpath.dirname(master), "admin.sock")
    maps_dir = paths.maps_dir or maps_dir_beside(config)
    if dataplane:
        # The config names paths on the Data Plane API's host, where dataplaneapi's defaults
        # are those of a packaged HAProxy; `config` is our copy of what it was given.
        master = ""
        runtime = paths.runtime_socket or RENDER_RUNTIME_SOCKET
        maps_dir = paths.maps_dir or RENDER_MAPS_DIR
    lock = f"{run_dir}/kube2haproxy.lock" if run_dir is not None else f"{config}.lock"
    supervised = paths.master_socket is None and not dataplane
    return Paths(supervised, config, master, runtime, run_dir, maps_dir, lock)


RENDER_RUNTIME_SOCKET = "/run/haproxy/admin.sock"  # what `render` writes when unset
RENDER_MAPS_DIR = "/etc/haproxy/maps"  # where `render` to standard output says the maps are


@dataclass(frozen=True, slots=True)
class RenderPaths:
    """The paths a rendered config names: its runtime API socket, its maps directory."""

    runtime_socket: str = RENDER_RUNTIME_SOCKET
    maps_dir: str = RENDER_MAPS_DIR


def render_paths(settings: Settings, *, output: str | None) -> RenderPaths:
    """`render`: the flags, else the runtime socket the sidecar uses and the maps beside the
    output (or where `run` would put them when rendering to standard output)."""
    maps_dir = settings.paths.maps_dir or (
        maps_dir_beside(output) if output is not None else RENDER_MAPS_DIR
    )
    return RenderPaths(settings.paths.runtime_socket or RENDER_RUNTIME_SOCKET, maps_dir)


def parse_listen(value: str) -> tuple[str, int]:
    """`127.0.0.1:9333`, `[::1]:9333`, `localhost:9333` or `:9333` (every address); ValueError
    saying what is expected otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: expected host:port, with a port in 0..65535")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{value!r}: expected [IPv6 address]:port")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, as [::1]:9333")
    return host, int(port)


def maps_dir_beside(config: str) -> str:
    """Where a config's map files go without --maps-dir: `maps/` beside it."""
    return posixpath.join(posixpath.dirname(posixpath.abspath(config)), "maps")
