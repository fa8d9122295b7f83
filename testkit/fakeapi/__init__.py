"""A fake Kubernetes API server that speaks the list and watch wire protocol over real HTTP.

Tests of the controller point the official ``kubernetes`` client at it (``api.kubeconfig()``)
instead of patching the client, so what is exercised is the client's real request building,
urllib3's real chunked decoding and the controller's real error handling.

The server is standard library only: ``http.server.ThreadingHTTPServer`` speaking HTTP/1.1
(keep-alive) on 127.0.0.1 and an ephemeral port, one thread per connection.

Resources (``GET`` only; the plural paths of the real API server, cluster-wide or namespaced):

    /api/v1/services                 /api/v1/namespaces/{ns}/services
    /api/v1/endpoints                /api/v1/namespaces/{ns}/endpoints
    /apis/discovery.k8s.io/v1/endpointslices
    /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices

Beside them, what a client asks before it lists (access.py): ``GET /version`` (a 1.31 server's
answer; ``set_version`` changes it) and ``POST /apis/authorization.k8s.io/v1/
selfsubjectaccessreviews``, answered 201 with ``status.allowed`` true unless ``deny(verb,
resource)`` refused it (``access_reviews`` lists what was asked).

Anything else is 404 with a ``Status`` body (another method is 405); a malformed query is 400.

State. ``put(obj)`` and ``delete(kind, ns, name)`` change the store. Every change takes the next
value of ONE global counter (like an etcd revision), which becomes the object's
``metadata.resourceVersion`` and the revision of the ADDED / MODIFIED / DELETED event recorded in
a log that watches replay from. ``resourceVersion`` values on the wire are decimal strings.

LIST (no ``watch``)::

    200 {"kind": "ServiceList", "apiVersion": "v1",
         "metadata": {"resourceVersion": "42", "continue": "...", "remainingItemCount": 3},
         "items": [{"metadata": ...}, ...]}

Items are sorted by namespace then name and carry no ``kind``/``apiVersion`` (as the real server
sends them). ``labelSelector`` takes comma-separated (AND) terms ``key``, ``!key``, ``key=value``,
``key==value`` and ``key!=value`` (which also matches objects without the key). With ``limit`` the
list is paginated: ``metadata.continue`` is present only while items remain (and
``remainingItemCount`` too, when no selector is used); the token is opaque and every page of one
list comes from the snapshot taken by the first page, whose revision is the list's
``metadata.resourceVersion``. After ``expire_continue_tokens()`` a request with an old token gets
410 ``Expired`` whose ``Status`` carries, as the real server's does, a fresh ``metadata.continue``
that continues from the same key on the current state (an inconsistent list). The list's
``resourceVersion`` parameter is ignored: lists are always served from the latest state.

WATCH (``watch=true``, or any value Go's ``strconv.ParseBool`` reads as true)::

    200  Content-Type: application/json  Transfer-Encoding: chunked
    {"type":"ADDED","object":{"kind":"Service","apiVersion":"v1","metadata":{...},...}}\\n
    {"type":"BOOKMARK","object":{"kind":"Service","apiVersion":"v1","metadata":{...}}}\\n
    0\\r\\n\\r\\n  (the terminating chunk, when timeoutSeconds runs out)

One JSON event per line, each line written and flushed as its own HTTP chunk. ``resourceVersion``
is required (400 without it). The stream first replays every logged event of the resource newer
than that revision, then streams live events; ``resourceVersion=0`` instead starts with a
synthetic ADDED event for each current object (the real server's "any" semantics). Events are
filtered by namespace and ``labelSelector`` the way the watch cache filters them: an object
modified into the selection arrives as ADDED, one modified out of it as DELETED (its previous
state with the new revision). Event objects DO carry ``kind``/``apiVersion``.
``timeoutSeconds`` (whole seconds) ends the stream cleanly with the terminating chunk; without it
the stream stays open until the test stops the server. With ``allowWatchBookmarks=true``,
``bookmark(resource)`` sends a BOOKMARK at the current revision.

Failures a test can inject:

- ``compact()``: the log of every revision up to the current one is discarded. A watch from a
  revision older than that one (it would need a discarded event) gets HTTP 200 and a
  single ``ERROR`` event carrying a 410 ``Expired`` Status ("too old resource version: X (Y)"),
  then the stream ends cleanly. A watch from the current revision or a newer one is served, so a
  client that relists after the 410 recovers. Open watches are not affected.
- ``fail_next(resource, status, times)``: the next requests (list or watch) fail with that
  status and a ``Status`` body; "version" and "selfsubjectaccessreviews" name those requests.
- ``expire_continue_tokens()``: see LIST.
- ``drop_watches()``: open watch sockets are shut down with no terminating chunk, so the client
  sees a broken chunked stream (urllib3 ``ProtocolError``, ``http.client.IncompleteRead``).
- ``hang_watches()``: open and future watches send nothing at all (a new watch does not even get
  its response headers) while their TCP connections stay open, like a dead peer, so only a client
  read timeout notices; ``unhang()`` delivers what was held back, in order. ``timeoutSeconds``
  does not fire while a watch is hung. A hung watch counts in ``open_watches()``.

Introspection: ``requests`` (every request as a ``RequestRecord``), ``open_watches()``,
``wait_for_watch()``, ``wait_for_request()`` and ``errors`` (unexpected exceptions in handler
threads: a correct run leaves it empty).

Seen from the kubernetes client (37.x), worth knowing when writing the controller's tests:
``load_kube_config`` wants the kubeconfig path as a ``str`` (a ``Path`` fails), which is what
``kubeconfig()`` returns; the client's default urllib3 ``Retry(3)`` retries a GET whose response
headers time out, so a watch opened while hung is sent 4 times before ``MaxRetryError``; and a
urllib3 streaming response must be iterated through ONE iterator (an abandoned ``iter(resp)``
closes the connection), and closed with ``close()``, not ``release_conn()``, mid-stream.

Modules, by job (their names without a leading underscore may be used across the package; what
tests import is re-exported here, and the modules themselves are not an interface):

    api.py          FakeKubeAPI, the facade; the one lock; the hooks the handler calls
    access.py       the server's version, and access reviews answered from a test's rules
    server.py       the threaded HTTP server, its connections and threads, start and stop
    handler.py      routing, request records, list and error responses, the watch stream
    store.py        objects, the revision counter, the event log, compaction
    pagination.py   lists: filtering, limit/continue tokens, snapshots and their expiry
    watch.py        open watches: replay, filtering into ADDED/MODIFIED/DELETED, bookmarks, drops
    faults.py       injected request failures and hung watches
    labels.py       label selectors
    resources.py    the served resources and their kinds
    wire.py         JSON, Status bodies and Failure, RequestRecord, ParseBool, socket shutdown
"""

from __future__ import annotations

from .api import FakeKubeAPI
from .labels import Selector
from .resources import RESOURCES, ResourceType
from .wire import Failure, RequestRecord, status_body

__all__ = [
    "RESOURCES",
    "Failure",
    "FakeKubeAPI",
    "RequestRecord",
    "ResourceType",
    "Selector",
    "status_body",
]
