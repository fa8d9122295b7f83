"""deploy/ and haproxy/ stay true.

Every kustomization builds, without the kustomize binary: `build` below emulates the few features
these files use (resources, components, configMapGenerator with kustomize's load restrictor,
patches, namespace, images) and refuses any other, so a file using more fails here rather than
being half-checked. Every object passes the Kubernetes schemas in strict mode (unknown fields
fail). The paths, ports and flags the manifests give the controller, HAProxy and keepalived are
the ones the controller's own CLI and settings resolve them to; the bootstrap config passes the
real `haproxy -c`, and run.sh really starts HAProxy with both sockets where the controller looks.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from prometheus_client import CollectorRegistry

from kube2haproxy import cli, settings
from kube2haproxy.appliers.master import MasterCLI
from kube2haproxy.appliers.runtime import RuntimeAPI
from kube2haproxy.probes import ProbeServer
from kube2haproxy.settings import parse_listen
from tests.live import wait_for

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
ENDPOINTS_FALLBACK = DEPLOY / "components" / "endpoints-fallback"
KEEPALIVED = DEPLOY / "components" / "keepalived"
EXAMPLE = DEPLOY / "overlays" / "example"
RUN_SH = ROOT / "haproxy" / "run.sh"
BOOTSTRAP_CFG = ROOT / "haproxy" / "bootstrap.cfg"

# What gets built: each kustomization as it is, and the base with its components (as an overlay
# naming them would).
BUILDS: dict[str, tuple[Path, tuple[Path, ...]]] = {
    "base": (BASE, ()),
    "base+endpoints-fallback": (BASE, (ENDPOINTS_FALLBACK,)),
    "base+keepalived": (BASE, (KEEPALIVED,)),
    "base+all-components": (BASE, (ENDPOINTS_FALLBACK, KEEPALIVED)),
    "overlays/example": (EXAMPLE, ()),
}
WITH_KEEPALIVED = ("base+keepalived", "base+all-components", "overlays/example")
# The controller refuses --keepalived-config without an interface, which only the cluster's
# overlay can name (deploy/overlays/example does).
OVERLAY_FOR_KEEPALIVED: Obj = {
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "controller",
                        "env": [{"name": "KUBE2HAPROXY_KEEPALIVED_INTERFACE", "value": "eth0"}],
                    }
                ]
            }
        }
    }
}
# The oldest and newest Kubernetes whose schemas kubernetes-validate ships.
VERSIONS = sorted(
    {
        min(kubernetes_validate.utils.all_versions(), key=lambda v: tuple(map(int, v.split(".")))),
        kubernetes_validate.latest_version(),
    }
)
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount"
POD_IP = "192.0.2.7"  # what status.podIP stands for when the test expands $(POD_IP)


# --- a small, strict kustomize -------------------------------------------------------------------

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "components",
    "configMapGenerator",
    "patches",
    "images",
}
# Strategic merge: lists merged by these keys (as the Kubernetes API declares them); any other
# list in a patch replaces the original, which is what the API says for the lists used here.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
REPLACED_LISTS = {"command", "args", "add", "drop", "tolerations", "items", "sources"}


class KustomizeError(Exception):
    pass


def load_documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def inside(root: Path, name: str) -> Path:
    """A file a kustomization may read: kustomize's default load restrictor (RootOnly)."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise KustomizeError(f"{root}: {name} is outside the kustomization's root")
    return path


def build(root: Path, *, components: tuple[Path, ...] = ()) -> list[Obj]:
    """`kustomize build root`, with `components` appended to the root's own (names get no hash
    suffix)."""
    return accumulate(root, [], extra_components=components, component=False)


def accumulate(
    root: Path, objects: list[Obj], *, extra_components: tuple[Path, ...], component: bool
) -> list[Obj]:
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    if unknown:
        raise KustomizeError(f"{root}: fields this emulation does not know: {sorted(unknown)}")
    expected = ("Component", "v1alpha1") if component else ("Kustomization", "v1beta1")
    got = (kustomization.get("kind"), kustomization.get("apiVersion", "").rpartition("/")[2])
    if got != expected:
        raise KustomizeError(f"{root}: a {'component' if component else 'kustomization'}: {got}")
    objects = copy.deepcopy(objects)
    for entry in kustomization.get("resources", []):
        target = (root / entry).resolve()
        if target.is_dir():  # another kustomization: may lie anywhere
            objects += accumulate(target, [], extra_components=(), component=False)
        else:
            objects += load_documents(inside(root, entry))
    for entry in [*kustomization.get("components", []), *extra_components]:
        objects = accumulate((root / entry).resolve(), objects, extra_components=(), component=True)
    for generator in kustomization.get("configMapGenerator", []):
        if set(generator) - {"name", "files", "options"} or set(generator.get("options", {})) - {
            "labels"
        }:
            raise KustomizeError(f"{root}: configMapGenerator fields this emulation does not know")
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": generator["name"],
                    "labels": dict(generator.get("options", {}).get("labels", {})),
                },
                "data": {
                    Path(name).name: inside(root, name).read_text() for name in generator["files"]
                },
            }
        )
    for patch in kustomization.get("patches", []):
        apply_patch(root, patch, objects)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in pod_spec(obj).get("containers", []) if is_workload(obj) else []:
                name, colon, tag = container["image"].rpartition(":")
                if not colon or "/" in tag:  # no tag: a registry's port is no tag
                    name, tag = container["image"], "latest"
                if name == image["name"]:
                    name = image.get("newName", name)
                    container["image"] = f"{name}:{image.get('newTag', tag)}"
    return objects


def apply_patch(root: Path, entry: Obj, objects: list[Obj]) -> None:
    if set(entry) - {"path", "patch", "target"}:
        raise KustomizeError(f"{root}: patch fields this emulation does not know: {entry}")
    text = inside(root, entry["path"]).read_text() if "path" in entry else entry["patch"]
    patch = yaml.safe_load(text)
    target = entry.get("target")
    if target is None:
        target = {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    if set(target) - {"group", "version", "kind", "name", "namespace"}:
        raise KustomizeError(f"{root}: target selectors this emulation does not know: {target}")
    matches = [obj for obj in objects if selected(obj, target)]
    if len(matches) != 1:
        raise KustomizeError(f"{root}: patch target {target} matches {len(matches)} objects")
    if isinstance(patch, list):
        json_patch(matches[0], patch)
    else:
        strategic_merge(matches[0], patch, path="")


def selected(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    have = {
        "group": group,
        "version": version,
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"].get("namespace"),
    }
    return all(have[key] == value for key, value in target.items())


def json_patch(obj: Obj, operations: list[Obj]) -> None:
    for operation in operations:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]
        ]
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = last if isinstance(node, dict) else (len(node) if last == "-" else int(last))
        op = operation["op"]
        if op == "test":
            if node[key] != operation["value"]:
                raise KustomizeError(f"test failed: {operation['path']} is {node[key]!r}")
        elif op == "add" and isinstance(node, list):
            node.insert(key, copy.deepcopy(operation["value"]))
        elif op in ("add", "replace"):
            if op == "replace" and isinstance(node, dict) and key not in node:
                raise KustomizeError(f"replace: {operation['path']} does not exist")
            node[key] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del node[key]
        else:
            raise KustomizeError(f"JSON patch operation this emulation does not know: {op}")


def strategic_merge(original: Obj, patch: Obj, *, path: str) -> None:
    for key, value in patch.items():
        where = f"{path}.{key}"
        if key.startswith("$"):
            raise KustomizeError(f"{where}: patch directives are not emulated")
        if isinstance(value, dict) and isinstance(original.get(key), dict):
            strategic_merge(original[key], value, path=where)
        elif isinstance(value, list) and key in MERGE_KEYS:
            merge_key = MERGE_KEYS[key]
            items = original.setdefault(key, [])
            for item in value:
                found = [i for i in items if i[merge_key] == item[merge_key]]
                if found:
                    strategic_merge(found[0], item, path=f"{where}[{item[merge_key]}]")
                else:
                    items.append(copy.deepcopy(item))
        elif isinstance(value, list) and key not in REPLACED_LISTS:
            raise KustomizeError(f"{where}: how a strategic merge treats this list is unknown")
        else:
            original[key] = copy.deepcopy(value)


# --- reading the built objects -------------------------------------------------------------------


def is_workload(obj: Obj) -> bool:
    return obj["kind"] in ("DaemonSet", "Deployment", "StatefulSet")


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def the(objects: list[Obj], kind: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def container(objects: list[Obj], name: str) -> Obj:
    containers: list[Obj] = pod_spec(the(objects, "DaemonSet"))["containers"]
    found = [c for c in containers if c["name"] == name]
    assert len(found) == 1, f"{len(found)} containers named {name}"
    return found[0]


def has_container(objects: list[Obj], name: str) -> bool:
    return any(c["name"] == name for c in pod_spec(the(objects, "DaemonSet"))["containers"])


def env_of(c: Obj) -> dict[str, str]:
    """The container's environment, field references given the values the kubelet would."""
    env = {}
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}, var
            env[var["name"]] = POD_IP
    return env


def expand(arg: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)


def controller_settings(objects: list[Obj]) -> settings.Settings:
    """The settings `kube2haproxy run` gets from the controller container's args and environment,
    through the real CLI."""
    c = container(objects, "controller")
    env = env_of(c)
    args = [expand(arg, env) for arg in c["args"]]
    assert args[0] == "run", args
    with mock.patch.dict(os.environ, env, clear=True):
        context = cli.run.make_context("run", args[1:])
    return cli.settings_from(context.params)


def attached_paths(config: settings.Settings) -> settings.Paths:
    # uid 0: the containers' user (the uid matters only when supervised, which must not happen).
    paths = settings.resolve_paths(config, uid=0, environ={}, tmp="/tmp")
    assert not paths.supervised, "the controller must attach to the haproxy container's HAProxy"
    return paths


def mount_for(c: Obj, path: str) -> Obj:
    """The volume mount of the container that holds `path` (the deepest one)."""
    mounts = [
        m
        for m in c.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"container {c['name']}: nothing mounted at {path}"
    return max(mounts, key=lambda m: len(m["mountPath"]))


def volume(objects: list[Obj], name: str) -> Obj:
    volumes: list[Obj] = pod_spec(the(objects, "DaemonSet"))["volumes"]
    found = [v for v in volumes if v["name"] == name]
    assert len(found) == 1, f"{len(found)} volumes named {name}"
    return found[0]


def assert_shared(objects: list[Obj], path: str, *, writer: str, reader: str) -> None:
    """`path` is on one emptyDir in both containers, at the same place, writable by `writer`."""
    mounts = [mount_for(container(objects, name), path) for name in (writer, reader)]
    assert {(m["name"], m["mountPath"], m.get("subPath")) for m in mounts} == {
        (mounts[0]["name"], mounts[0]["mountPath"], mounts[0].get("subPath"))
    }, f"{path}: {writer} and {reader} see different volumes: {mounts}"
    assert "emptyDir" in volume(objects, mounts[0]["name"]), path
    assert not mounts[0].get("readOnly"), f"{path}: {writer} must be able to write it"


def haproxy_command() -> list[str]:
    """The `exec haproxy ...` of run.sh, as words."""
    lines = [line for line in RUN_SH.read_text().splitlines() if line.startswith("exec haproxy ")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])[1:]


def option(words: list[str], flag: str) -> str:
    assert words.count(flag) == 1, f"{flag} in {words}"
    return words[words.index(flag) + 1]


def keepalived_script(objects: list[Obj]) -> str:
    command = container(objects, "keepalived")["command"]
    assert command[:2] == ["/bin/sh", "-c"], command
    script: str = command[2]
    return script


def keepalived_words(script: str) -> list[str]:
    """The options of the script's one keepalived command line (continued with backslashes)."""
    commands = re.findall(r"^\s*keepalived (.*?[^\\])$", script, re.MULTILINE | re.DOTALL)
    assert len(commands) == 1, script
    return shlex.split(commands[0].replace("\\\n", " ").removesuffix("&"))


@pytest.fixture(scope="module")
def builds() -> dict[str, list[Obj]]:
    built = {}
    for name, (root, extra) in BUILDS.items():
        objects = build(root, components=extra)
        if KEEPALIVED in extra:  # what an overlay using the component must add
            strategic_merge(the(objects, "DaemonSet"), OVERLAY_FOR_KEEPALIVED, path="")
        built[name] = objects
    return built


# --- the emulation itself ------------------------------------------------------------------------


def test_every_kustomization_is_built() -> None:
    roots = {path.parent for path in DEPLOY.rglob("kustomization.yaml")}
    built = {root for root, _ in BUILDS.values()} | {
        c for _, extra in BUILDS.values() for c in extra
    }
    assert roots == built


def test_the_emulation_refuses_what_kustomize_refuses(tmp_path: Path) -> None:
    (tmp_path / "outside.cfg").write_text("x\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "configMapGenerator:\n  - name: x\n    files: [../outside.cfg]\n"
    )
    with pytest.raises(KustomizeError, match="outside the kustomization's root"):
        build(root)
    (root / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\ncommonLabels: {}\n"
    )
    with pytest.raises(KustomizeError, match="does not know"):
        build(root)


def test_the_generated_configmap_carries_the_haproxy_files(builds: dict[str, list[Obj]]) -> None:
    for objects in builds.values():
        bootstrap = volume(objects, "bootstrap")["configMap"]["name"]
        maps = [
            o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == bootstrap
        ]
        assert len(maps) == 1
        assert maps[0]["data"] == {
            "run.sh": RUN_SH.read_text(),
            "bootstrap.cfg": BOOTSTRAP_CFG.read_text(),
        }


# --- schemas -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", BUILDS)
def test_every_object_passes_the_kubernetes_schemas(
    builds: dict[str, list[Obj]], name: str, version: str
) -> None:
    for obj in builds[name]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} ({version}): {exc.message}")


def test_every_object_is_in_the_namespace_and_selected(builds: dict[str, list[Obj]]) -> None:
    for objects in builds.values():
        namespace = the(objects, "Namespace")["metadata"]["name"]
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                assert obj["metadata"]["namespace"] == namespace, obj["metadata"]
        daemonset = the(objects, "DaemonSet")
        labels = daemonset["spec"]["template"]["metadata"]["labels"]
        for selector in (
            daemonset["spec"]["selector"],
            the(objects, "PodDisruptionBudget")["spec"]["selector"],
        ):
            assert selector["matchLabels"].items() <= labels.items()
        binding = the(objects, "ClusterRoleBinding")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": the(objects, "ClusterRole")["metadata"]["name"],
        }
        account = the(objects, "ServiceAccount")["metadata"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]
        assert pod_spec(daemonset)["serviceAccountName"] == account["name"]


# --- RBAC ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDS)
def test_the_cluster_role_grants_reading_services_and_endpoints_only(
    builds: dict[str, list[Obj]], name: str
) -> None:
    objects = builds[name]
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    granted = set()
    for rule in the(objects, "ClusterRole")["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, URLs
        granted |= {
            (g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        }
    resources = {("", "services"), ("discovery.k8s.io", "endpointslices")}
    if controller_settings(objects).kube.watch_endpoints:
        resources.add(("", "endpoints"))
    assert granted == {(g, r, v) for g, r in resources for v in ("get", "list", "watch")}
    assert controller_settings(objects).kube.watch_endpoints == (
        ENDPOINTS_FALLBACK in BUILDS[name][1]
    )


# --- paths, sockets, ports -----------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDS)
def test_haproxy_starts_where_the_attached_controller_looks(
    builds: dict[str, list[Obj]], name: str
) -> None:
    objects = builds[name]
    config = controller_settings(objects)
    paths = attached_paths(config)
    words = haproxy_command()
    assert option(words, "-S").split(",")[0] == paths.master_socket
    assert option(words, "-S").split(",")[1:] == ["level", "admin", "mode", "600"]
    assert option(words, "-f") == paths.config
    assert "-W" in words
    stats = re.findall(r"^\s*stats socket (\S+)(.*)$", BOOTSTRAP_CFG.read_text(), re.MULTILINE)
    assert [(path, rest.split()) for path, rest in stats] == [
        (paths.runtime_socket, ["mode", "600", "level", "admin"])
    ]
    script = RUN_SH.read_text()
    assert re.findall(r"^\s*cp (\S+) (\S+)$", script, re.MULTILINE) == [
        (
            mount_for(container(objects, "haproxy"), "/bootstrap")["mountPath"] + "/bootstrap.cfg",
            paths.config,
        )
    ]
    assert re.findall(r"^\s*mkdir -p (\S+)$", script, re.MULTILINE) == [paths.maps_dir]
    assert container(objects, "haproxy")["command"] == [
        mount_for(container(objects, "haproxy"), "/bootstrap")["mountPath"] + "/run.sh"
    ]
    for path in (paths.config, paths.maps_dir):
        assert_shared(objects, path, writer="controller", reader="haproxy")
    for path in (paths.master_socket, paths.runtime_socket):
        assert_shared(objects, path, writer="haproxy", reader="controller")


@pytest.mark.parametrize("name", BUILDS)
def test_the_probes_reach_the_controllers_endpoint(builds: dict[str, list[Obj]], name: str) -> None:
    objects = builds[name]
    c = container(objects, "controller")
    host, port = parse_listen(controller_settings(objects).observe.listen)
    assert pod_spec(the(objects, "DaemonSet"))["hostNetwork"] is True
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"]["port"] == port
        # No host: the kubelet probes the pod IP, the node's address with hostNetwork. The
        # controller listens there exactly (a wildcard would take the port from HAProxy's VIPs).
        assert probe["httpGet"].get("host", POD_IP) == host, (host, probe)
    assert [p["containerPort"] for p in c["ports"]] == [port]

    # The paths are the ones the probe server answers with the matching check.
    server = ProbeServer(
        "127.0.0.1:0",
        live=lambda: (False, "live"),
        ready=lambda: (False, "ready"),
        registry=CollectorRegistry(),
    )
    server.start()
    try:
        for probe, check in ((c["livenessProbe"], "live"), (c["readinessProbe"], "ready")):
            url = f"http://127.0.0.1:{server.port}{probe['httpGet']['path']}"
            with pytest.raises(urllib.error.HTTPError) as failed:
                urllib.request.urlopen(url, timeout=5)
            assert (failed.value.code, failed.value.read()) == (503, f"{check}\n".encode())
    finally:
        server.stop()


def test_every_environment_variable_is_a_setting(builds: dict[str, list[Obj]]) -> None:
    known = {spec.envvar for spec in settings.specs()}
    for objects in builds.values():
        for c in pod_spec(the(objects, "DaemonSet"))["containers"]:
            for name in env_of(c):
                assert not name.startswith("KUBE2HAPROXY_") or name in known, name


# --- security ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDS)
def test_each_container_has_the_least_it_needs(builds: dict[str, list[Obj]], name: str) -> None:
    objects = builds[name]
    spec = pod_spec(the(objects, "DaemonSet"))
    wanted = {
        # Low ports; dropping the workers to uid 99 in a chroot (the master alone stays root).
        "haproxy": {"NET_BIND_SERVICE", "SETUID", "SETGID", "SYS_CHROOT"},
        "controller": set(),
        "keepalived": {"NET_ADMIN", "NET_RAW"},
    }
    assert [c["name"] for c in spec["containers"]] == [
        n for n in wanted if n != "keepalived" or name in WITH_KEEPALIVED
    ]
    for c in spec["containers"]:
        context = c["securityContext"]
        assert context["capabilities"]["drop"] == ["ALL"], c["name"]
        assert set(context["capabilities"].get("add", [])) == wanted[c["name"]], c["name"]
        assert context["allowPrivilegeEscalation"] is False, c["name"]
        assert context["readOnlyRootFilesystem"] is True, c["name"]
        assert not context.get("privileged"), c["name"]
        # One uid for all: the sockets are mode 600, and a signal needs the same uid (the haproxy
        # image would otherwise run as uid 99).
        assert (context["runAsUser"], context["runAsGroup"]) == (0, 0), c["name"]
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
        assert "memory" in c["resources"]["limits"], c["name"]
        token = [m for m in c.get("volumeMounts", []) if m["mountPath"] == SERVICE_ACCOUNT_TOKEN]
        assert bool(token) == (c["name"] == "controller"), c["name"]
    assert spec["automountServiceAccountToken"] is False
    assert not spec.get("hostPID") and not spec.get("hostIPC")
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    # keepalived's container reloads it itself: no container can reach another's files (the
    # API token among them) through /proc.
    assert not spec.get("shareProcessNamespace")


# --- keepalived ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WITH_KEEPALIVED)
def test_keepalived_reads_and_writes_where_the_controller_does(
    builds: dict[str, list[Obj]], name: str
) -> None:
    objects = builds[name]
    publish = controller_settings(objects).publish
    assert publish.keepalived_config is not None
    script = keepalived_script(objects)
    assert subprocess.run(["sh", "-n", "-c", script], check=False).returncode == 0
    assert re.findall(r"^conf=(\S+)$", script, re.MULTILINE) == [publish.keepalived_config]
    words = keepalived_words(script)
    assert option(words, "--use-file") == "$conf"
    assert {"--dont-fork", "--log-console"} <= set(words)
    # No signal from the controller (it cannot see keepalived's processes): the script reloads it.
    assert publish.keepalived_pidfile == "none"
    for path in (option(words, "--pid"), option(words, "--vrrp_pid")):
        mount = mount_for(container(objects, "keepalived"), path)
        assert "emptyDir" in volume(objects, mount["name"]), path
        assert not mount.get("readOnly"), f"{path}: keepalived must be able to write it"
    assert_shared(objects, publish.keepalived_config, writer="controller", reader="keepalived")
    assert mount_for(container(objects, "keepalived"), publish.keepalived_config).get("readOnly")
    # The file holds the VRRP password: HAProxy's container does not mount it.
    config_volume = mount_for(container(objects, "controller"), publish.keepalived_config)["name"]
    assert config_volume not in {
        m["name"] for m in container(objects, "haproxy").get("volumeMounts", [])
    }
    assert container(objects, "keepalived")["image"] == container(objects, "controller")["image"]

    # The password comes from the Secret deploy/README.md tells the operator to create.
    assert publish.keepalived_password_file is not None
    mount = mount_for(container(objects, "controller"), publish.keepalived_password_file)
    secret = volume(objects, mount["name"])["secret"]
    key = posixpath.relpath(publish.keepalived_password_file, mount["mountPath"])
    readme = (DEPLOY / "README.md").read_text()
    assert re.search(
        rf"create secret generic {secret['secretName']} .*--from-literal={key}=", readme, re.DOTALL
    )
    if name.startswith("overlays/"):
        assert publish.keepalived_interface, "an overlay must name the VRRP interface"


FAKE_KEEPALIVED = """#!/bin/sh
# Records its options and the signals it gets, as keepalived would act on them.
echo "$@" > "$FAKE_DIR/args"
trap 'echo HUP >> "$FAKE_DIR/signals"' HUP
trap 'echo TERM >> "$FAKE_DIR/signals"; exit 0' TERM
while :; do sleep 0.05; done
"""


def test_keepalived_container_reloads_keepalived_when_the_file_changes(
    builds: dict[str, list[Obj]], tmp_path: Path
) -> None:
    """The container's script itself, with a stand-in keepalived on PATH and its paths moved
    into a temporary directory: it waits for the controller's first file, reloads keepalived on
    every change of content (not on a rewrite of the same content) and stops it on SIGTERM."""
    objects = builds[WITH_KEEPALIVED[0]]
    publish = controller_settings(objects).publish
    assert publish.keepalived_config is not None
    conf, run_dir = tmp_path / "keepalived.conf", tmp_path / "run"
    run_dir.mkdir()
    script = keepalived_script(objects).replace(publish.keepalived_config, str(conf))
    script = script.replace("/run/keepalived/", f"{run_dir}/")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "keepalived").write_text(FAKE_KEEPALIVED)
    (bin_dir / "keepalived").chmod(0o755)
    # The script compares checksums once a second: a stand-in cksum counts its looks, so the
    # test waits for the script to have looked instead of for time.
    cksum = shutil.which("cksum")
    assert cksum is not None
    (bin_dir / "cksum").write_text(
        f'#!/bin/sh\necho look >> "$FAKE_DIR/looks"\nexec {cksum} "$@"\n'
    )
    (bin_dir / "cksum").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path)}
    args, signals, looks = tmp_path / "args", tmp_path / "signals", tmp_path / "looks"

    def received() -> list[str]:
        return signals.read_text().split() if signals.exists() else []

    def looked() -> int:
        return len(looks.read_text().split()) if looks.exists() else 0

    def write(text: str) -> None:
        replacement = tmp_path / "next.conf"  # as the controller writes: a rename
        replacement.write_text(text)
        replacement.rename(conf)

    process = subprocess.Popen(["sh", "-c", script], env=env)
    try:
        time.sleep(1.5)
        assert not args.exists(), "keepalived must wait for the controller's file"
        write("vrrp_instance one {}\n")
        wait_for(args.exists, what="keepalived started")
        words = args.read_text().split()
        assert option(words, "--use-file") == str(conf)
        assert option(words, "--pid").startswith(f"{run_dir}/")

        write("vrrp_instance two {}\n")
        wait_for(lambda: received() == ["HUP"], what="a reload")
        write("vrrp_instance two {}\n")  # the same content: no reload
        seen = looked()
        wait_for(lambda: looked() >= seen + 2, timeout=20, what="the script looking again")
        assert received() == ["HUP"]
        write("vrrp_instance three {}\n")
        wait_for(lambda: received() == ["HUP", "HUP"], timeout=20, what="a second reload")

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert received() == ["HUP", "HUP", "TERM"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_keepalived_knows_its_options(builds: dict[str, list[Obj]]) -> None:
    keepalived = shutil.which("keepalived")
    if keepalived is None:
        pytest.skip("keepalived is not installed (the controller image has it)")
    usage = subprocess.run([keepalived, "--help"], capture_output=True, text=True, check=False)
    script = keepalived_script(builds[WITH_KEEPALIVED[0]])
    options = [word for word in keepalived_words(script) if word.startswith("--")]
    assert options
    for word in options:
        assert re.search(rf"(?<!\S){re.escape(word)}\b", usage.stdout + usage.stderr), word


# --- the files themselves ------------------------------------------------------------------------


def test_run_sh_is_valid_shell() -> None:
    assert subprocess.run(["sh", "-n", str(RUN_SH)], check=False).returncode == 0


def test_bootstrap_config_passes_haproxy_check(haproxy_bin: str, tmp_path: Path) -> None:
    runtime = attached_paths(controller_settings(build(BASE))).runtime_socket
    text = BOOTSTRAP_CFG.read_text()
    assert runtime in text
    config = tmp_path / "bootstrap.cfg"
    config.write_text(text.replace(runtime, str(tmp_path / "admin.sock")))
    result = subprocess.run(
        [haproxy_bin, "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def pod_dirs() -> Iterator[Path]:
    # Short: Unix socket paths hold at most 107 bytes.
    with tempfile.TemporaryDirectory(prefix="k2h-") as directory:
        yield Path(directory)


@pytest.mark.parametrize("restarted", [False, True], ids=["new-pod", "restarted-container"])
def test_run_sh_starts_haproxy_with_both_sockets(
    haproxy_bin: str, pod_dirs: Path, restarted: bool
) -> None:
    """run.sh in a fake container: every mount of the haproxy container is a directory here."""
    objects = build(BASE)
    config_settings = controller_settings(objects)
    paths = attached_paths(config_settings)
    mounts = {
        m["mountPath"]: pod_dirs / m["name"] for m in container(objects, "haproxy")["volumeMounts"]
    }

    def relocate(text: str) -> str:
        for mount_path, directory in mounts.items():
            text = re.sub(rf"(?<![\w./-]){re.escape(mount_path)}(?=[/,\s]|$)", str(directory), text)
        return text

    for directory in mounts.values():
        directory.mkdir()
    bootstrap = mounts[mount_for(container(objects, "haproxy"), "/bootstrap")["mountPath"]]
    (bootstrap / "bootstrap.cfg").write_text(relocate(BOOTSTRAP_CFG.read_text()))
    script = pod_dirs / "run.sh"
    script.write_text(relocate(RUN_SH.read_text()))
    # The root filesystem is read-only: every path the script names is on a mount.
    for path in re.findall(r"(?<![\w.-])/[\w./-]+", re.sub(r"(?m)^#.*$", "", script.read_text())):
        assert path.startswith(str(pod_dirs)), f"run.sh writes {path}, outside the mounts"
    config, master, runtime = (
        Path(relocate(p)) for p in (paths.config, paths.master_socket, paths.runtime_socket)
    )
    if restarted:
        config.write_text(
            BOOTSTRAP_CFG.read_text().replace(paths.runtime_socket, str(runtime)) + "# kept\n"
        )
    environment = {**os.environ, "PATH": f"{Path(haproxy_bin).parent}:{os.environ['PATH']}"}
    with subprocess.Popen(
        ["sh", str(script)], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as process:
        try:
            master_cli = MasterCLI(str(master), timeout_s=2)
            # Listed is not ready from 3.1: wait for a worker that answers.
            worker = master_cli.wait_ready(deadline=time.monotonic() + 10)
            assert process.poll() is None, process.communicate()[0].decode()
            assert worker is not None, "no worker answers behind the master socket"
            # exec: the master is the process the container runtime signals.
            table = master_cli.command("show proc").splitlines()
            assert table[1].split()[:2] == [str(process.pid), "master"], table
            assert "Name: HAProxy" in RuntimeAPI(str(runtime)).command("show info")
            assert Path(relocate(paths.maps_dir)).is_dir()
            assert config.read_text().endswith("# kept\n") == restarted
            process.send_signal(signal.SIGUSR1)  # the haproxy image's STOPSIGNAL: a soft stop
            assert process.wait(timeout=5) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_the_controller_image_carries_the_pods_haproxy_and_keepalived(
    builds: dict[str, list[Obj]],
) -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    installs = re.findall(r"apt-get install (.*?)(?:&&|$)", dockerfile, re.MULTILINE)
    assert len(installs) == 1, installs
    words = installs[0].split()
    assert "--no-install-recommends" in words
    assert "keepalived" in words
    # `haproxy -c` runs the pod's HAProxy: the binary of the haproxy container's image.
    (version,) = re.findall(r"^ARG HAPROXY_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert "FROM haproxy:${HAPROXY_VERSION} AS haproxy" in dockerfile
    assert "COPY --from=haproxy /usr/local/sbin/haproxy /usr/local/sbin/haproxy" in dockerfile
    for objects in builds.values():
        assert container(objects, "haproxy")["image"] == f"haproxy:{version}"
    # The controller container runs the entrypoint with `run ...`; keepalived's replaces it.
    assert re.findall(r"^ENTRYPOINT (.*)$", dockerfile, re.MULTILINE) == ['["kube2haproxy"]']
    for objects in builds.values():
        assert "command" not in container(objects, "controller")
        if has_container(objects, "keepalived"):
            assert "command" in container(objects, "keepalived")


def test_the_deploy_readme_names_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name != "README.md":
            assert str(path.relative_to(DEPLOY)) in readme, path
    for mentioned in re.findall(r"(?<![\w./-])(?:deploy|haproxy)/[\w./-]*\w", readme):
        assert (ROOT / mentioned).exists(), mentioned


def _canonical(objects: list[Obj]) -> list[Obj]:
    """Objects in a stable order, and the lists strategic merges key by name (or mount path)
    sorted: kustomize puts merged items first, the emulation in place; neither order matters."""
    out = copy.deepcopy(objects)
    for obj in out:
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        spec.get("containers", []).sort(key=lambda c: c["name"])
        spec.get("volumes", []).sort(key=lambda v: v["name"])
        for c in spec.get("containers", []):
            c.get("env", []).sort(key=lambda e: e["name"])
            c.get("volumeMounts", []).sort(key=lambda m: m["mountPath"])
    return sorted(out, key=lambda o: (o["kind"], o["metadata"]["name"]))


@pytest.mark.parametrize("name", ["base", "base+endpoints-fallback", "overlays/example"])
def test_the_emulation_agrees_with_kustomize(
    builds: dict[str, list[Obj]], name: str, tmp_path: Path
) -> None:
    """Where kubectl is installed, its kustomize builds exactly what the emulation builds."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the emulation above still runs)")
    root, extra = BUILDS[name]
    if extra:  # an overlay naming the components, as a user writes it
        overlay = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(root, tmp_path)],
            "components": [os.path.relpath(c, tmp_path) for c in extra],
        }
        (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
        root = tmp_path
    result = subprocess.run(
        [kubectl, "kustomize", str(root)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # kustomize suffixes generated ConfigMaps' names with a hash of their content, everywhere
    # they are named; the emulation does not.
    for generated in (o["metadata"]["name"] for o in builds[name] if o["kind"] == "ConfigMap"):
        text, count = re.subn(rf"\b{re.escape(generated)}-[a-z0-9]{{10}}\b", generated, text)
        assert count >= 2, f"{generated}: defined and referred to under its hashed name"
    real = [obj for obj in yaml.safe_load_all(text) if obj]
    assert _canonical(real) == _canonical(builds[name])
