"""kube: Services and EndpointSlices from the Kubernetes API, as events. The only module that
imports the official `kubernetes` client.

Per resource, one thread: a paginated LIST (limit/continue), then WATCH from the list's
resourceVersion with bookmarks, a server-side timeoutSeconds and a client-side read timeout (a
dead TCP peer cannot hang a watch forever). Every event and bookmark advances the tracked
resourceVersion; a watch the server ends is resumed from it. On 410 Gone (or an expired continue
token) the resource is listed again and the differences with what was emitted are sent, deletions
included. Errors reconnect with capped exponential backoff and full jitter. The client's model
classes are never built: responses are read as raw JSON (`_preload_content=False`) into plain
dicts, which is several times faster and lighter at 10,000 objects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3

from kube2haproxy.errors import EnvironmentProblem, FieldError
from kube2haproxy.events import Event, EventType, differences
from kube2haproxy.metrics import Metrics
from kube2haproxy.resources import JSON, Key, Kind, cut, key_of
from kube2haproxy.settings import KubeSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_GRACE_S = 30.0  # the client waits this much longer than the server's watch timeout
SHORT_WATCH_S = 1.0  # a watch that ends sooner with no event counts as an error
BACKOFF_BASE_S = 0.5

Emit = Callable[[Event], None]


class Gone(Exception):
    """The resourceVersion we hold is too old (410): list again."""


class WatchFailed(Exception):
    """The server sent an ERROR event other than 410."""


@dataclass(frozen=True, slots=True)
class Resource:
    plural: str  # "services"
    kind: Kind
    api_version: str
    namespaced_method: str  # method names on the client API class
    all_method: str
    selectable: bool  # --label-selector applies (Services only: slices carry other labels)


SERVICES = Resource(
    "services",
    Kind.SERVICE,
    "v1",
    "list_namespaced_service",
    "list_service_for_all_namespaces",
    True,
)
ENDPOINT_SLICES = Resource(
    "endpointslices",
    Kind.ENDPOINT_SLICE,
    "discovery.k8s.io/v1",
    "list_namespaced_endpoint_slice",
    "list_endpoint_slice_for_all_namespaces",
    False,
)
ENDPOINTS = Resource(
    "endpoints",
    Kind.ENDPOINTS,
    "v1",
    "list_namespaced_endpoints",
    "list_endpoints_for_all_namespaces",
    False,
)


def api_client(settings: KubeSettings) -> kubernetes.client.ApiClient:
    """A client configured from --kubeconfig/--context, else in-cluster, else the default
    kubeconfig ($KUBECONFIG, ~/.kube/config)."""
    configuration = kubernetes.client.Configuration()
    try:
        if settings.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        else:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=settings.kubeconfig,
                context=settings.context,
                client_configuration=configuration,
            )
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        where = settings.kubeconfig or "the default kubeconfig"
        raise EnvironmentProblem(
            f"cannot configure the Kubernetes client from {where}: {exc}"
        ) from exc
    # Our loop reconnects with backoff and knows why; urllib3's own retries would silently
    # send a request to a dead peer four times.
    configuration.retries = False
    return kubernetes.client.ApiClient(configuration)


class KubeSource:
    """Watches Services and EndpointSlices (and, if asked, v1 Endpoints) concurrently."""

    def __init__(
        self,
        settings: KubeSettings,
        *,
        client: kubernetes.client.ApiClient,
        metrics: Metrics | None = None,
        read_grace_s: float = READ_GRACE_S,
    ) -> None:
        self._watchers = [
            _Watcher(
                resource,
                settings=settings,
                client=client,
                metrics=metrics,
                read_grace_s=read_grace_s,
            )
            for resource in watched(settings)
        ]
        self.names = tuple(w.name for w in self._watchers)

    def start(self, emit: Emit) -> None:
        for watcher in self._watchers:
            watcher.start(emit)

    def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
        for watcher in self._watchers:
            watcher.join(timeout=5)

    @property
    def watchers(self) -> list[_Watcher]:
        return list(self._watchers)


class _Watcher:
    def __init__(
        self,
        resource: Resource,
        *,
        settings: KubeSettings,
        client: kubernetes.client.ApiClient,
        metrics: Metrics | None,
        read_grace_s: float,
    ) -> None:
        self.resource = resource
        self._read_grace_s = read_grace_s
        self.name = f"kube/{resource.plural}"
        self._settings = settings
        self._metrics = metrics
        api_class = (
            kubernetes.client.DiscoveryV1Api
            if resource.kind is Kind.ENDPOINT_SLICE
            else kubernetes.client.CoreV1Api
        )
        api = api_class(client)
        if settings.namespace:
            method = getattr(api, resource.namespaced_method)
            namespace = settings.namespace
            self._call: Callable[..., Any] = lambda **kw: method(namespace, **kw)
        else:
            self._call = getattr(api, resource.all_method)
        self._known: dict[Key, JSON] = {}
        self._synced = False
        self._stop = threading.Event()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._thread: threading.Thread | None = None
        self.resource_version = ""
        self.lists = 0
        self.watches = 0

    def start(self, emit: Emit) -> None:
        self._emit = emit
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:  # unblock a read in progress
            with contextlib.suppress(Exception):
                response.shutdown()
            with contextlib.suppress(Exception):
                response.close()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self.resource_version = self._list()
                    need_list = False
                started = time.monotonic()
                progressed = self._watch()
                if not progressed and time.monotonic() - started < SHORT_WATCH_S:
                    # A watch that ends at once with nothing: a broken server or proxy. Back
                    # off as for an error instead of reconnecting in a tight loop.
                    raise WatchFailed("the watch ended at once without any event")
                failures = 0 if progressed else failures
                self._restarted("closed")
            except kubernetes.client.ApiException as exc:
                if exc.status != 410:
                    failures = self._failed(exc, failures)
                    continue
                need_list = True  # 410 on the watch request itself: the version expired
                self._restarted("expired")
            except Gone:
                need_list = True
                self._restarted("expired")
                log.info(
                    "%s: resourceVersion %s expired; listing again",
                    self.name,
                    self.resource_version,
                )
            except Exception as exc:
                failures = self._failed(exc, failures)

    def _failed(self, exc: BaseException, failures: int) -> int:
        """Log, count and wait out a failure (capped exponential backoff, full jitter)."""
        if self._stop.is_set():
            return failures
        failures += 1
        delay = random.uniform(
            0, min(self._settings.backoff_max_ms / 1000, BACKOFF_BASE_S * 2**failures)
        )
        self._restarted("error")
        log.warning(
            "%s: %s: %s; retrying in %.1fs", self.name, type(exc).__name__, _brief(exc), delay
        )
        self._stop.wait(delay)
        return failures

    def _restarted(self, reason: str) -> None:
        if self._metrics is not None and not self._stop.is_set():
            self._metrics.watch_restarts.labels(self.resource.plural, reason).inc()

    # --- list -----------------------------------------------------------------------------

    def _list(self) -> str:
        """List everything (page by page), emit the differences with what we emitted before,
        and return the list's resourceVersion."""
        self.lists += 1
        items: dict[Key, JSON] = {}
        token: str | None = None
        version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": self._settings.page_size}
            if token:
                kwargs["_continue"] = token
            try:
                body = self._get(**kwargs)
            except kubernetes.client.ApiException as exc:
                if exc.status == 410 and token:  # the continue token expired: start over
                    log.info("%s: list continuation expired; listing again", self.name)
                    items, token, version = {}, None, ""
                    continue
                raise
            metadata = body.get("metadata") or {}
            version = version or str(metadata.get("resourceVersion") or "")
            for item in body.get("items") or ():
                obj = self._normalize(item)
                key = self._key(obj)
                if key is not None:
                    items[key] = obj
            token = metadata.get("continue") or None
            if not token:
                break
        self._reconcile(items)
        if not self._synced:
            self._synced = True
            self._emit(Event(EventType.SYNCED, self.name))
            log.info("%s: listed %d objects at resourceVersion %s", self.name, len(items), version)
        return version

    def _request(self, *, read_timeout_s: float, **kwargs: Any) -> Any:
        """The raw HTTP response of a list or watch request (with --label-selector)."""
        if self.resource.selectable and self._settings.label_selector:
            kwargs["label_selector"] = self._settings.label_selector
        return self._call(
            _preload_content=False, _request_timeout=(CONNECT_TIMEOUT_S, read_timeout_s), **kwargs
        )

    def _get(self, **kwargs: Any) -> JSON:
        response = self._request(read_timeout_s=self._settings.watch_timeout_ms / 1000, **kwargs)
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        if not isinstance(body, dict):
            raise ValueError(f"{self.name}: the list is not a JSON object")
        return body

    def _reconcile(self, items: dict[Key, JSON]) -> None:
        """Emit what changed since the objects we knew, deletions while we were away included."""
        kind = self.resource.kind
        for event in differences(
            self.name,
            {(kind, key): obj for key, obj in self._known.items()},
            {(kind, key): obj for key, obj in items.items()},
            same=lambda a, b: _version(a) == _version(b),
        ):
            self._emit(event)
        self._known = items

    # --- watch ----------------------------------------------------------------------------

    def _watch(self) -> bool:
        """Watch from the tracked resourceVersion until the server ends the stream; True when
        at least one event or bookmark arrived."""
        self.watches += 1
        timeout_s = self._settings.watch_timeout_ms / 1000
        # The server ends the watch at a random point of [timeout, 2 x timeout), as client-go
        # does, so that a fleet of controllers does not reconnect in lockstep.
        server_timeout = max(1, int(timeout_s * (1 + random.random())))
        kwargs: dict[str, Any] = {
            "watch": True,
            "resource_version": self.resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": server_timeout,
        }
        response = self._request(read_timeout_s=server_timeout + self._read_grace_s, **kwargs)
        self._response = response
        progressed = False
        try:
            for line in _lines(response):
                if self._stop.is_set():
                    break
                self._event(json.loads(line))
                progressed = True
        finally:
            self._response = None
            # close(), not release_conn(): a stream left part-read must not go back to the pool.
            with contextlib.suppress(Exception):
                response.close()
        return progressed

    def _event(self, event: Any) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise ValueError(f"malformed watch event: {str(event)[:200]}")
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message", ""))
            raise WatchFailed(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        version = _version(obj)
        if kind == "BOOKMARK":
            if version:
                self.resource_version = version
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise ValueError(f"unknown watch event type {kind!r}")
        obj = self._normalize(obj)
        key = self._key(obj)
        if version:
            self.resource_version = version
        if key is None:
            return
        if kind == "DELETED":
            if self._known.pop(key, None) is not None:
                self._emit(Event(EventType.DELETED, self.name, self.resource.kind, key, obj))
            return
        existed = key in self._known
        self._known[key] = obj
        self._emit(
            Event(
                EventType.MODIFIED if existed else EventType.ADDED,
                self.name,
                self.resource.kind,
                key,
                obj,
            )
        )

    # --- objects --------------------------------------------------------------------------

    def _normalize(self, obj: JSON) -> JSON:
        """List items carry no kind; most fields are never read (resources.cut: in place, obj
        is just decoded)."""
        obj["kind"] = self.resource.kind.value
        obj["apiVersion"] = self.resource.api_version
        return cut(self.resource.kind, obj, intern=sys.intern)

    def _key(self, obj: JSON) -> Key | None:
        try:
            return key_of(obj)
        except FieldError as exc:
            log.warning("%s: object without a usable name ignored: %s", self.name, exc)
            return None


def _version(obj: JSON) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("resourceVersion") or "") if isinstance(metadata, dict) else ""


def _lines(response: Any) -> Iterator[bytes]:
    for raw in response:
        line = raw.strip()
        if line:
            yield line


def _brief(exc: BaseException) -> str:
    if isinstance(exc, kubernetes.client.ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return str(exc)[:300]


# --- before watching: what `kube2haproxy doctor` asks ------------------------------------------


def watched(settings: KubeSettings) -> tuple[Resource, ...]:
    """The resources `run` lists and watches with these settings (KubeSource's, doctor's)."""
    return (SERVICES, ENDPOINT_SLICES, *([ENDPOINTS] if settings.watch_endpoints else []))


def group_of(resource: Resource) -> str:
    """The API group of a resource ("" for the core group)."""
    return resource.api_version.rpartition("/")[0]


def server_url(client: kubernetes.client.ApiClient) -> str:
    return str(client.configuration.host)


def server_version(client: kubernetes.client.ApiClient, *, timeout_s: float) -> str:
    """The API server's version (`GET /version`: its gitVersion, "v1.31.0"); EnvironmentProblem
    saying why when it does not answer."""
    body = _call(
        kubernetes.client.VersionApi(client).get_code, what="GET /version", timeout_s=timeout_s
    )
    return str(body.get("gitVersion") or f"v{body.get('major', '?')}.{body.get('minor', '?')}")


def may(
    client: kubernetes.client.ApiClient,
    verb: str,
    resource: Resource,
    *,
    namespace: str | None,
    timeout_s: float,
) -> tuple[bool, str]:
    """Whether our identity may `verb` the resource (in `namespace`, None: all of them), as the
    API server's authorizer answers a SelfSubjectAccessReview, and its reason."""
    # A plain dict: the client serializes it as it is (its model classes are never built here).
    review: Any = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": namespace or "",
                "verb": verb,
                "group": group_of(resource),
                "resource": resource.plural,
            }
        },
    }
    api = kubernetes.client.AuthorizationV1Api(client)
    body = _call(
        lambda **kw: api.create_self_subject_access_review(review, **kw),
        what="SelfSubjectAccessReview",
        timeout_s=timeout_s,
    )
    status = body.get("status")
    if not isinstance(status, dict):
        raise EnvironmentProblem(f"SelfSubjectAccessReview: an answer without a status: {body}")
    reason = status.get("reason") or status.get("evaluationError") or ""
    return status.get("allowed") is True, str(reason)


def _call(call: Callable[..., Any], *, what: str, timeout_s: float) -> JSON:
    """One request's JSON body; EnvironmentProblem naming the request and why otherwise."""
    try:
        response = call(_preload_content=False, _request_timeout=(CONNECT_TIMEOUT_S, timeout_s))
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
    except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise EnvironmentProblem(f"{what}: {_brief(exc)}") from exc
    except ValueError as exc:
        raise EnvironmentProblem(f"{what}: not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise EnvironmentProblem(f"{what}: not a JSON object")
    return body
