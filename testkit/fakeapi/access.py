"""What a client asks before it lists: the server's version (``GET /version``) and whether it may
do something (``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews``).

A review is answered from the rules a test set: every request is allowed unless ``deny`` named
its verb and resource (and group), as RBAC answers for a service account bound to a role. The
reply is the review sent back with its ``status`` filled in (``allowed`` and a ``reason``), with
201 Created, as the real server answers a create.
"""

from __future__ import annotations

import copy
import threading

from .resources import RESOURCES
from .wire import JSON, Failure

VERSION_PATHS = frozenset({"/version", "/version/"})
REVIEWS_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"

# What `kubectl version -o json` shows of a 1.31 server.
DEFAULT_VERSION: JSON = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0",
    "gitCommit": "9edcffcde5595e8a5b1a35f88c421764e575afce",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T07:28:49Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def group_of(resource: str) -> str:
    """The API group of a served resource ("" for the core group), else ""."""
    rt = RESOURCES.get(resource)
    if rt is None or "/" not in rt.api_version:
        return ""
    return rt.api_version.split("/", 1)[0]


class Access:
    """Guarded by the server's shared `cond`."""

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self.version: JSON = copy.deepcopy(DEFAULT_VERSION)
        self._denied: set[tuple[str, str, str]] = set()  # (verb, group, resource)
        self.reviews: list[JSON] = []  # the resourceAttributes of every review, in order

    def deny(self, verb: str, resource: str, group: str | None) -> None:
        with self._cond:
            self._denied.add((verb, group_of(resource) if group is None else group, resource))

    def allow_all(self) -> None:
        with self._cond:
            self._denied.clear()

    def review(self, body: object) -> JSON:
        """The review answered, or a 400 Failure for one the real server would refuse."""
        if not isinstance(body, dict) or body.get("kind") != "SelfSubjectAccessReview":
            raise Failure(400, "the body is not a SelfSubjectAccessReview")
        spec = body.get("spec")
        attributes = spec.get("resourceAttributes") if isinstance(spec, dict) else None
        if not isinstance(attributes, dict):
            # The real server also takes nonResourceAttributes; nothing here asks for them.
            raise Failure(422, "spec.resourceAttributes: Required value", reason="Invalid")
        key = (
            str(attributes.get("verb", "")),
            str(attributes.get("group", "")),
            str(attributes.get("resource", "")),
        )
        with self._cond:
            self.reviews.append(copy.deepcopy(attributes))
            allowed = key not in self._denied
            self._cond.notify_all()
        answer = copy.deepcopy(body)
        answer.setdefault("apiVersion", "authorization.k8s.io/v1")
        answer["metadata"] = {"creationTimestamp": None}
        answer["status"] = (
            {"allowed": True, "reason": "allowed by the fake API's rules"}
            if allowed
            # RBAC allows or says nothing: no `denied`, which only an authorizer that refuses
            # outright (a webhook) sets.
            else {"allowed": False, "reason": "no rule of the fake API allows it"}
        )
        return answer
