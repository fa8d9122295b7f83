"""Tests of the manifest loader: files, directories, stdin, lists, syntax errors and findings."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from kube2haproxy.errors import InputError
from kube2haproxy.findings import Severity
from kube2haproxy.resources import Key, Kind
from kube2haproxy.sources import manifests
from testkit.builders import service


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def service_yaml(name: str, namespace: str = "default", ip: str = "10.96.0.10") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}, namespace: {namespace}}}
        spec:
          clusterIP: {ip}
          ports: [{{port: 80, protocol: TCP}}]
        """
    )


def keys(loaded: manifests.Manifests) -> set[tuple[Kind, Key]]:
    return set(loaded.objects)


def svc(namespace: str, name: str) -> tuple[Kind, Key]:
    return (Kind.SERVICE, Key(namespace, name))


# --- formats ---------------------------------------------------------------------------------


def test_multi_document_yaml_loads_every_document(tmp_path: Path) -> None:
    file = write(
        tmp_path / "all.yaml",
        service_yaml("web", "shop")
        + "---\n"
        + service_yaml("api", "shop")
        + "---\n"
        + "# only a comment: an empty document\n"
        + "---\n"
        + textwrap.dedent(
            """\
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: web-abc12
              namespace: shop
              labels: {kubernetes.io/service-name: web}
            addressType: IPv4
            endpoints: []
            """
        ),
    )
    loaded = manifests.load([str(file)])
    assert keys(loaded) == {
        svc("shop", "web"),
        svc("shop", "api"),
        (Kind.ENDPOINT_SLICE, Key("shop", "web-abc12")),
    }
    assert loaded.objects[svc("shop", "api")]["metadata"]["name"] == "api"
    assert loaded.findings == []


def test_parse_text_skips_empty_documents() -> None:
    docs = manifests.parse_text("---\n# nothing\n---\na: 1\n---\n", origin="x.yaml")
    assert docs == [{"a": 1}]


def test_kind_list_items_are_loaded(tmp_path: Path) -> None:
    file = write(
        tmp_path / "list.yaml",
        """
        apiVersion: v1
        kind: List
        metadata: {resourceVersion: ""}
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: web, namespace: shop}
          spec: {clusterIP: 10.96.0.20}
        - apiVersion: v1
          kind: Endpoints
          metadata: {name: web, namespace: shop}
          subsets: []
        - apiVersion: apps/v1
          kind: Deployment
          metadata: {name: web, namespace: shop}
        """,
    )
    loaded = manifests.load([str(file)])
    assert keys(loaded) == {svc("shop", "web"), (Kind.ENDPOINTS, Key("shop", "web"))}
    assert loaded.objects[svc("shop", "web")]["spec"]["clusterIP"] == "10.96.0.20"
    assert loaded.findings == []


def test_typed_lists_give_their_items_kind_and_api_version(tmp_path: Path) -> None:
    # What the raw API returns for GET /api/v1/services: items carry no kind nor apiVersion.
    services = {
        "apiVersion": "v1",
        "kind": "ServiceList",
        "metadata": {"resourceVersion": "123"},
        "items": [
            {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"clusterIP": "10.0.0.1"}},
            {"metadata": {"name": "api", "namespace": "shop"}, "spec": {"clusterIP": "10.0.0.2"}},
        ],
    }
    slices = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSliceList",
        "items": [
            {
                "metadata": {
                    "name": "web-1",
                    "namespace": "shop",
                    "labels": {"kubernetes.io/service-name": "web"},
                },
                "addressType": "IPv4",
                "endpoints": [],
            }
        ],
    }
    write(tmp_path / "svc.json", json.dumps(services))
    write(tmp_path / "eps.json", json.dumps(slices))
    loaded = manifests.load([str(tmp_path)])
    assert keys(loaded) == {
        svc("shop", "web"),
        svc("shop", "api"),
        (Kind.ENDPOINT_SLICE, Key("shop", "web-1")),
    }
    web = loaded.objects[svc("shop", "web")]
    assert (web["kind"], web["apiVersion"]) == ("Service", "v1")
    web_slice = loaded.objects[(Kind.ENDPOINT_SLICE, Key("shop", "web-1"))]
    assert (web_slice["kind"], web_slice["apiVersion"]) == ("EndpointSlice", "discovery.k8s.io/v1")
    assert loaded.findings == []


def test_typed_list_of_an_old_api_version_is_ignored() -> None:
    doc = {
        "apiVersion": "discovery.k8s.io/v1beta1",
        "kind": "EndpointSliceList",
        "items": [{"metadata": {"name": "web-1"}, "addressType": "IPv4", "endpoints": []}],
    }
    loaded = manifests.load(["-"], stdin=io.StringIO(json.dumps(doc)))
    assert loaded.objects == {}
    assert loaded.findings == []


def test_lists_nested_in_lists_are_flattened() -> None:
    inner = {"apiVersion": "v1", "kind": "ServiceList", "items": [{"metadata": {"name": "a"}}]}
    outer = {"apiVersion": "v1", "kind": "List", "items": [inner, service("b")]}
    loaded = manifests.load(["-"], stdin=io.StringIO(json.dumps(outer)))
    assert keys(loaded) == {svc("default", "a"), svc("default", "b")}


def test_json_file(tmp_path: Path) -> None:
    file = write(
        tmp_path / "svc.json", json.dumps(service("web", "shop", cluster_ips=["10.96.1.1"]))
    )
    loaded = manifests.load([str(file)])
    assert keys(loaded) == {svc("shop", "web")}
    assert loaded.objects[svc("shop", "web")]["spec"]["clusterIP"] == "10.96.1.1"
    assert loaded.origins[svc("shop", "web")] == str(file)


def test_json_on_stdin() -> None:
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": [service("web")]})
    loaded = manifests.load(["-"], stdin=io.StringIO(text))
    assert keys(loaded) == {svc("default", "web")}
    assert loaded.origins[svc("default", "web")] == "<stdin>"


def test_yaml_on_stdin_with_files(tmp_path: Path) -> None:
    file = write(tmp_path / "a.yaml", service_yaml("from-file"))
    stdin = io.StringIO(service_yaml("from-stdin") + "---\n" + service_yaml("second"))
    loaded = manifests.load([str(file), "-"], stdin=stdin)
    assert keys(loaded) == {
        svc("default", "from-file"),
        svc("default", "from-stdin"),
        svc("default", "second"),
    }
    assert loaded.origins[svc("default", "second")] == "<stdin> (document 2)"


def test_read_file_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    file = tmp_path / "bom.yaml"
    file.write_bytes(b"\xef\xbb\xbf" + service_yaml("web").encode())
    (document,) = manifests.read_file(file)
    assert isinstance(document, dict)
    assert document["metadata"] == {"name": "web", "namespace": "default"}


def test_yaml_flow_mapping_in_a_yaml_file_is_not_taken_for_json() -> None:
    docs = manifests.parse_text("{kind: Service, apiVersion: v1}\n", origin="flow.yaml")
    assert docs == [{"kind": "Service", "apiVersion": "v1"}]


# --- directories ------------------------------------------------------------------------------


def test_expand_directory_recursive_sorted_filtered(tmp_path: Path) -> None:
    for rel in (
        "z.yaml",
        "a.yml",
        "m.json",
        "UPPER.YAML",
        "sub/b.yaml",
        "sub/deeper/c.json",
        "README.md",
        "notes.txt",
        "a.yaml.bak",
        ".hidden.yaml",
        ".git/config.yaml",
        "sub/.cache/d.yaml",
    ):
        write(tmp_path / rel, "{}\n")
    (tmp_path / "dir.yaml").mkdir()  # a directory named like a manifest is not a file
    found = manifests.expand(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "UPPER.YAML",
        "a.yml",
        "m.json",
        "sub/b.yaml",
        "sub/deeper/c.json",
        "z.yaml",
    ]


def test_expand_file_is_itself_whatever_its_suffix(tmp_path: Path) -> None:
    file = write(tmp_path / "cluster.txt", service_yaml("web"))
    assert manifests.expand(file) == [file]
    assert keys(manifests.load([str(file)])) == {svc("default", "web")}


def test_directory_is_read_in_sorted_order_so_the_last_file_wins(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", service_yaml("web", ip="10.96.0.2"))
    write(tmp_path / "a" / "x.yaml", service_yaml("web", ip="10.96.0.1"))
    write(tmp_path / "c.json", json.dumps(service("web", cluster_ips=["10.96.0.3"])))
    write(tmp_path / ".hidden" / "z.yaml", service_yaml("web", ip="10.96.0.9"))
    write(tmp_path / "zz.txt", service_yaml("web", ip="10.96.0.8"))
    loaded = manifests.load([str(tmp_path)])
    assert loaded.objects[svc("default", "web")]["spec"]["clusterIP"] == "10.96.0.3"
    assert loaded.origins[svc("default", "web")] == str(tmp_path / "c.json")
    # a/x.yaml, then b.yaml, then c.json: two redefinitions, each naming the one it replaces.
    assert [(f.subject, f.message) for f in loaded.findings] == [
        (
            str(tmp_path / "b.yaml"),
            f"Service default/web also defined in {tmp_path / 'a' / 'x.yaml'}; "
            "the later definition is used",
        ),
        (
            str(tmp_path / "c.json"),
            f"Service default/web also defined in {tmp_path / 'b.yaml'}; "
            "the later definition is used",
        ),
    ]


def test_hidden_parent_directory_given_explicitly_is_read(tmp_path: Path) -> None:
    # Only entries *below* the given directory are checked for a leading dot.
    root = tmp_path / ".config"
    write(root / "svc.yaml", service_yaml("web"))
    assert manifests.expand(root) == [root / "svc.yaml"]


def test_empty_directory_loads_nothing(tmp_path: Path) -> None:
    loaded = manifests.load([str(tmp_path)])
    assert (loaded.objects, loaded.findings) == ({}, [])


# --- ignored kinds ----------------------------------------------------------------------------


def test_other_kinds_are_ignored_quietly(tmp_path: Path) -> None:
    file = write(
        tmp_path / "mixed.yaml",
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec: {replicas: 3}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: web}
        data: {a: b}
        ---
        apiVersion: discovery.k8s.io/v1beta1
        kind: EndpointSlice
        metadata: {name: web-abc}
        addressType: IPv4
        endpoints: []
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {}
        ---
        kind: Service
        metadata: {name: no-api-version}
        ---
        - just
        - a list
        ---
        plain scalar
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: kept}
        """,
    )
    loaded = manifests.load([str(file)])
    assert keys(loaded) == {svc("default", "kept")}
    assert loaded.findings == []


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("apiVersion: v1\nkind: Service\nmetadata:\n  name: [web\n", 5),
        ("apiVersion: v1\nkind: Service\n  metadata: x\n", 3),
        ("a: 1\n---\nb: 'unterminated\n", 4),
        ("kind: List\nitems:\n- a\n b: 1\nc\n", 4),
        ("kind: Service\nspec: !!python/object/apply:os.system [echo]\n", 2),
    ],
)
def test_yaml_syntax_error_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        manifests.load([str(file)])
    message = str(caught.value)
    assert message.startswith(f"{file}:{line}:")
    assert "invalid YAML" in message


def test_json_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.json"
    file.write_text('{\n  "kind": "Service",\n  "apiVersion": "v1",\n  "metadata": }\n')
    with pytest.raises(InputError, match=r"invalid JSON") as caught:
        manifests.read_file(file)
    assert str(caught.value).startswith(f"{file}:4:15: ")


def test_syntax_error_on_stdin_names_stdin_and_line() -> None:
    with pytest.raises(InputError) as caught:
        manifests.load(["-"], stdin=io.StringIO("kind: List\nitems:\n- {a: 1\n"))
    assert str(caught.value).startswith("<stdin>:4:")


def test_syntax_error_in_a_directory_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "good.yaml", service_yaml("web"))
    bad = tmp_path / "sub" / "bad.yml"
    bad.parent.mkdir()
    bad.write_text("kind: Service\nmetadata: {name: x\n")
    with pytest.raises(InputError) as caught:
        manifests.load([str(tmp_path)])
    assert str(caught.value).startswith(f"{bad}:3:")


def test_missing_path_raises_input_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InputError, match="no such file or directory") as caught:
        manifests.load([str(missing)])
    assert str(missing) in str(caught.value)
    with pytest.raises(InputError):
        manifests.expand(missing)


def test_undecodable_file_raises_input_error(tmp_path: Path) -> None:
    file = tmp_path / "latin1.yaml"
    file.write_bytes(b"kind: Service\nmetadata: {name: caf\xe9}\n")
    with pytest.raises(InputError, match="cannot read") as caught:
        manifests.read_file(file)
    assert str(file) in str(caught.value)


# --- findings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ("{namespace: shop}", "metadata.name"),
        ('{name: ""}', "metadata.name"),
        ("{name: 42}", "metadata.name"),
        ("{name: web, namespace: 7}", "metadata.namespace"),
        ("just-a-string", "metadata"),
    ],
)
def test_object_without_usable_name_is_a_warning_naming_the_file(
    tmp_path: Path, metadata: str, field: str
) -> None:
    file = write(
        tmp_path / "svc.yaml",
        service_yaml("good") + f"---\napiVersion: v1\nkind: Service\nmetadata: {metadata}\n",
    )
    loaded = manifests.load([str(file)])
    assert keys(loaded) == {svc("default", "good")}
    assert len(loaded.findings) == 1
    finding = loaded.findings[0]
    assert finding.severity is Severity.WARNING
    assert finding.subject == f"{file} (document 2)"
    assert finding.field == field
    assert finding.message.endswith("object ignored")
    assert str(finding).startswith(f"warning: {file} (document 2): {field}: ")


def test_duplicate_in_one_file_warns_naming_both_places_and_later_wins(tmp_path: Path) -> None:
    file = write(
        tmp_path / "dup.yaml",
        service_yaml("web", "shop", "10.96.0.1")
        + "---\n"
        + service_yaml("web", "shop", "10.96.0.2"),
    )
    loaded = manifests.load([str(file)])
    assert loaded.objects[svc("shop", "web")]["spec"]["clusterIP"] == "10.96.0.2"
    assert loaded.origins[svc("shop", "web")] == f"{file} (document 2)"
    [finding] = loaded.findings
    assert finding.severity is Severity.WARNING
    assert str(finding) == (
        f"warning: {file} (document 2): Service shop/web also defined in {file}; "
        "the later definition is used"
    )


def test_duplicate_across_files_and_stdin_later_wins(tmp_path: Path) -> None:
    first = write(tmp_path / "one.yaml", service_yaml("web", ip="10.96.0.1"))
    stdin = io.StringIO(json.dumps(service("web", cluster_ips=["10.96.0.2"])))
    loaded = manifests.load([str(first), "-"], stdin=stdin)
    assert loaded.objects[svc("default", "web")]["spec"]["clusterIP"] == "10.96.0.2"
    [finding] = loaded.findings
    assert finding.subject == "<stdin>"
    assert str(first) in finding.message


def test_same_name_in_different_kinds_or_namespaces_is_no_duplicate(tmp_path: Path) -> None:
    file = write(
        tmp_path / "x.yaml",
        service_yaml("web", "a")
        + "---\n"
        + service_yaml("web", "b")
        + "---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: web, namespace: a}\n",
    )
    loaded = manifests.load([str(file)])
    assert keys(loaded) == {svc("a", "web"), svc("b", "web"), (Kind.ENDPOINTS, Key("a", "web"))}
    assert loaded.findings == []


def test_missing_namespace_defaults_to_default(tmp_path: Path) -> None:
    file = write(
        tmp_path / "x.yaml",
        """
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: default}
        """,
    )
    loaded = manifests.load([str(file)])
    # The second, explicit "default" is the same object as the first, implicit one.
    assert keys(loaded) == {svc("default", "web")}
    assert "also defined in" in loaded.findings[0].message


# --- YAML aliases ----------------------------------------------------------------------------


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """About 1 KB of nested anchors that stands for width**levels nodes."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_naming_the_file_before_it_is_expanded(tmp_path: Path) -> None:
    bomb = write(tmp_path / "bomb.yaml", alias_bomb())
    assert len(bomb.read_bytes()) < 1_100
    with pytest.raises(InputError) as caught:
        manifests.load([str(bomb)])
    message = str(caught.value)
    assert message.startswith(f"{bomb}:1:1: YAML aliases refused: aliases expand the document")
    assert f"at most {manifests.MAX_ALIAS_EXPANSION:,}" in message


def test_too_many_aliases_are_refused() -> None:
    text = "base: &b {x: 1}\nitems:\n" + "".join(
        "  - *b\n" for _ in range(manifests.MAX_ALIASES + 1)
    )
    with pytest.raises(InputError, match=f"more than {manifests.MAX_ALIASES:,} aliases"):
        manifests.parse_text(text, origin="many.yaml")


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(InputError, match=r"many\.yaml:1:4: .*refers to a node that contains it"):
        manifests.parse_text("a: &a [1, *a]\n", origin="many.yaml")


def test_a_few_aliases_within_the_limits_are_expanded() -> None:
    text = textwrap.dedent(
        """\
        labels: &labels {app: web, tier: front}
        a: {metadata: {labels: *labels}}
        b: {metadata: {labels: *labels}}
        """
    )
    doc = manifests.parse_text(text, origin="ok.yaml")[0]
    assert isinstance(doc, dict)
    assert doc["a"] == doc["b"] == {"metadata": {"labels": {"app": "web", "tier": "front"}}}
    # The largest expansion allowed: a little under the limit passes.
    width = 1_000
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]", "a1: [" + ", ".join(["*a0"] * 999) + "]"]
    assert manifests.parse_text("\n".join(lines) + "\n", origin="edge.yaml")


@pytest.mark.parametrize(
    "written",
    [
        "2024-01-02T03:04:05Z",
        "'2024-01-02T05:04:05+02:00'",
        "2024-01-02T05:04:05+02:00",  # unquoted: YAML reads a datetime
        "2024-01-02 03:04:05",  # YAML's own form, UTC
    ],
)
def test_creation_timestamps_are_brought_to_the_api_form(written: str) -> None:
    text = service_yaml("web").replace(
        "metadata: {name: web, namespace: default}",
        f"metadata: {{name: web, namespace: default, creationTimestamp: {written}}}",
    )
    loaded = manifests.Manifests()
    loaded.add("x.yaml", manifests.parse_text(text, origin="x.yaml"))
    (obj,) = loaded.objects.values()
    assert obj["metadata"]["creationTimestamp"] == "2024-01-02T03:04:05Z"
