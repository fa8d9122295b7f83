"""kube: the Kubernetes API answers, and our identity may list and watch what `run` watches
(a SelfSubjectAccessReview per verb and resource: the API server's authorizer answers, so RBAC,
webhooks and any other authorizer are taken into account). Through sources.kube, the only
module that talks to the API."""

from __future__ import annotations

from collections.abc import Mapping

from kube2haproxy.doctor.check import Check, fail, ok, warn
from kube2haproxy.errors import EnvironmentProblem
from kube2haproxy.settings import KubeSettings

VERBS = ("list", "watch")
GRANT = (
    "kubectl create clusterrole kube2haproxy --verb=get,list,watch "
    "--resource={resources} && kubectl create clusterrolebinding kube2haproxy "
    "--clusterrole=kube2haproxy --serviceaccount=<namespace>:<name> "
    "(deploy/base/clusterrole.yaml and clusterrolebinding.yaml grant the same)"
)


def kube_checks(
    settings: KubeSettings, *, environ: Mapping[str, str], timeout_s: float = 10.0
) -> list[Check]:
    """`kube-api` (reachable, its version) and `kube-access` (list and watch allowed)."""
    # Imported here: the Kubernetes client takes half a second to import.
    from kube2haproxy.sources import kube  # noqa: PLC0415

    in_cluster = settings.kubeconfig is None and bool(environ.get("KUBERNETES_SERVICE_HOST"))
    where = (
        "in-cluster (KUBERNETES_SERVICE_HOST)"
        if in_cluster
        else settings.kubeconfig or "the default kubeconfig"
    )
    unchecked = warn("kube-access", "not checked: the API server did not answer", "see kube-api")
    try:
        client = kube.api_client(settings)
    except EnvironmentProblem as exc:
        return [
            fail(
                "kube-api",
                str(exc),
                "--kubeconfig PATH (and --context), or run in a pod with a service account",
            ),
            unchecked,
        ]
    with client:
        url = kube.server_url(client)
        try:
            version = kube.server_version(client, timeout_s=timeout_s)
        except EnvironmentProblem as exc:
            if "HTTP 401" in str(exc) or "HTTP 403" in str(exc):
                fix = f"credentials the API server accepts ({where}: its token or certificate)"
            elif in_cluster:
                # Without kube-proxy, the `kubernetes` Service's cluster IP is served only once
                # this pool serves it.
                fix = (
                    "set KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT to the API "
                    "server's own address (deploy/README.md, step 4)"
                )
            else:
                fix = f"the server of {where} (or --context) must be reachable from here"
            return [fail("kube-api", f"{url} ({where}): {exc}", fix), unchecked]
        checks = [ok("kube-api", f"{url} ({where}): Kubernetes {version}")]
        resources = kube.watched(settings)
        scope = f"namespace {settings.namespace}" if settings.namespace else "all namespaces"
        denied, errors = [], []
        for resource in resources:
            for verb in VERBS:
                label = f"{verb} {resource.plural}" + (
                    f".{kube.group_of(resource)}" if kube.group_of(resource) else ""
                )
                try:
                    allowed, reason = kube.may(
                        client, verb, resource, namespace=settings.namespace, timeout_s=timeout_s
                    )
                except EnvironmentProblem as exc:
                    errors.append(f"{label}: {exc}")
                    continue
                if not allowed:
                    denied.append(label + (f" ({reason})" if reason else ""))
        names = ",".join(
            r.plural + (f".{kube.group_of(r)}" if kube.group_of(r) else "") for r in resources
        )
        if denied:
            checks.append(
                fail(
                    "kube-access",
                    f"denied in {scope}: {'; '.join(denied)}",
                    GRANT.format(resources=names),
                )
            )
        elif errors:
            checks.append(
                warn(
                    "kube-access",
                    f"not answered: {'; '.join(errors)}",
                    "SelfSubjectAccessReviews are allowed to every authenticated identity "
                    "(ClusterRole system:basic-user): check the API server's authorizers",
                )
            )
        else:
            may = f"may {' and '.join(VERBS)} {names.replace(',', ', ')} in {scope}"
            checks.append(ok("kube-access", may))
        return checks
