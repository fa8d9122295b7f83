"""render: templates, user overrides, StrictUndefined and the output guard."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kube2haproxy import render as render_module
from kube2haproxy.errors import TemplateError
from kube2haproxy.model import Backend, Model
from kube2haproxy.render import BUNDLED, Renderer, duration
from kube2haproxy.settings import RenderSettings
from testkit.builders import endpoint, endpoint_slice, service
from tests.pipeline import backend_servers, render, run


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (1, "1ms"),
        (1500, "1500ms"),
        (2000, "2s"),
        (90_000, "90s"),
        (120_000, "2m"),
        (3_600_000, "1h"),
        (86_400_000, "1d"),
        (90_000_000, "25h"),
    ],
)
def test_duration_uses_the_largest_exact_unit(ms, text):
    assert duration(ms) == text


def model() -> Model:
    return run(service(), endpoint_slice(endpoints=["10.1.0.1"])).model


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def test_output_is_stable_and_ends_with_a_newline():
    first, second = render(model()), render(model())
    assert first == second
    assert first.endswith("\n") and not first.endswith("\n\n")
    assert backend_servers(first, "default_web_http") == ["10.1.0.1:8080"]


def test_a_single_template_can_be_overridden(tmp_path):
    custom = write(tmp_path / "t", "global.j2", "\nglobal\n    maxconn 4242\n")
    text = render(model(), templates=str(custom))
    assert "    maxconn 4242\n" in text
    assert "stats socket" not in text
    assert "backend default_web_http\n" in text  # the bundled backends.j2 still applies


def test_undefined_variable_names_the_template_and_line(tmp_path):
    custom = write(
        tmp_path / "t", "defaults.j2", "\ndefaults\n    mode tcp\n    {{ settings.nope }}\n"
    )
    with pytest.raises(TemplateError) as caught:
        render(model(), templates=str(custom))
    message = str(caught.value)
    assert message.startswith(f"{custom / 'defaults.j2'}:4: undefined variable")
    assert "nope" in message


def test_syntax_error_names_the_template_and_line(tmp_path):
    custom = write(tmp_path / "t", "backends.j2", "{% for be in model.backends %}\n{% endfo %}\n")
    with pytest.raises(TemplateError, match=r"backends\.j2:2: syntax error"):
        render(model(), templates=str(custom))


@pytest.mark.parametrize(
    "expression",
    ['"a\\nb"', '"a b"', '"#x"', '"\\"q\\""', "none", "true", '""', "[1]", '"é"'],
)
def test_guard_refuses_values_that_could_change_the_config_structure(tmp_path, expression):
    custom = write(tmp_path / "t", "global.j2", f"\nglobal\n    maxconn {{{{ {expression} }}}}\n")
    with pytest.raises(TemplateError, match=r"global\.j2:3: UnsafeValueError: refusing to print"):
        render(model(), templates=str(custom))


def test_missing_templates_directory_is_a_template_error(tmp_path):
    with pytest.raises(TemplateError, match="not a directory"):
        render(model(), templates=str(tmp_path / "absent"))


def test_the_bundled_templates_are_the_checkouts_top_level_folder():
    """In the checkout (editable or bare), the folder users look in for what to override;
    tests/test_packaging.py shows a wheel ships them inside the package."""
    assert Path(__file__).resolve().parents[1] / "templates" == BUNDLED
    assert {p.name for p in BUNDLED.glob("*.j2")} >= {
        "haproxy.cfg.j2",
        "global.j2",
        "defaults.j2",
        "frontends.j2",
        "backends.j2",
    }


@pytest.mark.parametrize("backend", ["x\n10.0.0.9 evil", "x y", "x#comment"])
def test_map_files_pass_the_same_guard_as_the_config(backend):
    """The per-port layout's maps are HAProxy input too: a value that would add a line or a
    word to one is refused, as in the config (the model's grammars stop it first; this is the
    second line of defence)."""
    from dataclasses import replace

    from kube2haproxy.render import Renderer
    from kube2haproxy.settings import RenderSettings

    renderer = Renderer(RenderSettings(frontend_layout="per-port"))
    clean = model()
    assert renderer.files(clean)  # the clean model's maps pass
    frontend = replace(clean.frontends[0], backend=backend)
    with pytest.raises(TemplateError, match=r"map port-\d+-[0-9a-f]+\.map: refusing to print"):
        renderer.files(replace(clean, frontends=(frontend, *clean.frontends[1:])))


# --- server lines: server.j2, rendered once per backend settings and state when it can be -------


def cluster_model() -> Model:
    return run(
        service(),
        service("db", cluster_ips=["10.96.0.11"], annotations={"kube2haproxy.io/maxconn": "7"}),
        endpoint_slice(endpoints=["10.1.0.1", "10.1.0.2"]),
        endpoint_slice("db", endpoints=["10.1.0.3"]),
    ).model


def server_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("server ")]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(
            "    server {{ s.name }} {{ s.ip }}:{{ s.port }}{% if s.parked %} off{% endif %}"
            " # {{ be.name }} {{ s.address }}\n",
            r"    server s\d+ 10\.1\.0\.1:8080 # default_web_http 10\.1\.0\.1:8080",
            id="stamped-other-fields",
        ),
        pytest.param(
            "    server {{ s.name|upper }} {{ s.address }}\n",
            r"    server S\d+ 10\.1\.0\.1:8080",
            id="filtered-name-per-line",
        ),
        pytest.param(
            "    server {% filter upper %}{{ s.name }}{% endfilter %} {{ s.address }}\n",
            r"    server S\d+ 10\.1\.0\.1:8080",
            id="filter-block-per-line",
        ),
        pytest.param(
            '    server {{ s.name }} {{ s.address }}{% if s.name == "s1" %} first{% endif %}\n\n',
            r"    server s1 \S+ first|    server s(?!1 )\d+ \S+",
            id="decision-on-name-per-line",
        ),
        pytest.param(
            "{% set n = s.name %}    server {{ n }}{{ n }} {{ s.address }}\n",
            r"    server (s\d+)\1 10\.1\.0\.1:8080",
            id="name-assigned-per-line",
        ),
    ],
)
def test_server_template_overrides_render_every_line_as_written(tmp_path, template, expected):
    """Whether server.j2 is stamped (rendered once and filled in) or rendered per server, each
    line is what the template says for that server."""
    custom = write(tmp_path / "t", "server.j2", template)
    lines = server_lines(render(cluster_model(), templates=str(custom)))
    assert len(lines) == 16  # two backends of 8 slots
    matching = sum(1 for line in lines if re.fullmatch(expected, line))
    assert matching == (16 if "|" in expected else 1), lines
    assert sum(1 for line in lines if "10.1.0.2:8080" in line) == 1


def test_stamped_lines_are_the_lines_rendered_one_by_one(tmp_path):
    """The bundled server.j2 as it is (stamped), and made unstampable by a no-op use of `s`,
    give the same file, for backends of different settings and servers in every state."""
    model = run(
        service(annotations={"kube2haproxy.io/check": "http", "kube2haproxy.io/maxconn": "5"}),
        service(
            "db", cluster_ips=["10.96.0.11"], annotations={"kube2haproxy.io/proxy-protocol": "v2"}
        ),
        endpoint_slice(
            endpoints=[
                "10.1.0.1",
                endpoint("10.1.0.2", ready=False, serving=True, terminating=True),
            ]
        ),
        endpoint_slice("db", endpoints=["10.1.0.3", "10.1.0.4"]),
    ).model
    bundled = (BUNDLED / "server.j2").read_text()
    custom = write(tmp_path / "t", "server.j2", "{% set unused = s %}" + bundled)
    text = render(model)
    assert " weight 0 check inter" in text and " send-proxy-v2" in text and " disabled" in text
    assert render(model, templates=str(custom)) == text


@pytest.mark.parametrize("stamped", [True, False])
@pytest.mark.parametrize("field", ["name", "address"])
def test_guard_refuses_an_unsafe_server_value(tmp_path, stamped, field):
    from dataclasses import replace

    clean = model()
    backend = clean.backends[0]
    evil = "s1\n    server evil 10.9.9.9:80"
    first = backend.servers[0]
    server = first._replace(name=evil) if field == "name" else first._replace(address=evil)
    broken = replace(clean, backends=(replace(backend, servers=(server, *backend.servers[1:])),))
    templates = {}
    if not stamped:
        bundled = (BUNDLED / "server.j2").read_text()
        templates["templates"] = str(
            write(tmp_path / "t", "server.j2", "{% set u = s %}" + bundled)
        )
    with pytest.raises(TemplateError, match="UnsafeValueError: refusing to print"):
        render(broken, **templates)


def test_server_lines_once_changed_by_a_template_are_guarded_again(tmp_path):
    bundled = (BUNDLED / "backends.j2").read_text()
    changed = bundled.replace(
        "{{ server_lines(be) }}", '{{ server_lines(be)|replace("s1", "s2") }}'
    )
    assert changed != bundled
    custom = write(tmp_path / "t", "backends.j2", changed)
    with pytest.raises(TemplateError, match="UnsafeValueError: refusing to print"):
        render(model(), templates=str(custom))


def _cluster(count: int) -> Model:
    objects = []
    for i in range(count):
        objects.append(service(f"svc-{i}", cluster_ips=[f"10.96.{i // 250}.{i % 250 + 1}"]))
        objects.append(endpoint_slice(f"svc-{i}", endpoints=[f"10.1.{i // 250}.{i % 250 + 1}"]))
    return run(*objects).model


_MANY = _cluster(150)  # about five runs of backends (RUN: 32 on average)


def _moved(backend: Backend, step: int) -> Backend:
    """The backend with its first server at another address: a new object, the same name."""
    first = backend.servers[0]
    ip = f"10.2.{step % 250}.{len(backend.name) % 250 + 1}"
    moved = first._replace(ip=ip, address=f"{ip}:{first.port}")
    return dataclasses.replace(backend, servers=(moved, *backend.servers[1:]))


@pytest.fixture(scope="module", params=["bundled", "counting"])
def churned(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> RenderSettings:
    """Rendering with the bundled templates, whose sections print each item alone (a run is
    kept item by item once an endpoint changes in it), or with a backends.j2 that numbers the
    backends of a run (`loop.index`: a run is rendered whole)."""
    if request.param == "bundled":
        return RenderSettings()
    text = (BUNDLED / "backends.j2").read_text()
    counting = text.replace(
        "\nbackend {{ be.name }}\n", "\n# {{ loop.index }}\nbackend {{ be.name }}\n"
    )
    assert counting != text
    directory = write(tmp_path_factory.mktemp("counting"), "backends.j2", counting)
    return RenderSettings(templates=str(directory))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(
            st.sets(st.integers(0, len(_MANY.backends) - 1), min_size=1, max_size=6),
            st.just("same"),
            st.just("fewer"),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_renderer_that_rendered_before_renders_what_a_fresh_one_does(churned, steps):
    """Endpoint churn re-renders only the runs (or the very backends) replaced and reuses the
    rest of the last render's text; the file is byte for byte what rendering the model anew
    gives, through any sequence of replacements, unchanged models and models of other
    lengths."""
    renderer = Renderer(churned)
    model = _MANY
    renderer.render(model)
    for n, step in enumerate(steps):
        if step == "fewer":
            model = dataclasses.replace(model, backends=model.backends[:-1])
        elif step != "same":
            backends = list(model.backends)
            for index in step:
                if index < len(backends):
                    backends[index] = _moved(backends[index], n)
            model = dataclasses.replace(model, backends=tuple(backends))
        # The reference: every backend a new object, which no cache of any renderer knows.
        anew = dataclasses.replace(
            model, backends=tuple(dataclasses.replace(b) for b in model.backends)
        )
        assert renderer.render(model) == render(anew, **dataclasses.asdict(churned))


@pytest.mark.parametrize(
    ("main", "included", "itemwise"),
    [
        ("{% for be in backends %}backend {{ be.name }}\n{% endfor %}", "", True),
        (
            "{% for be in backends %}{% for s in be.servers %}{{ loop.index }}{% endfor %}"
            "{% endfor %}",
            "",
            True,
        ),  # the inner loop's own `loop`
        ("{% for be in backends %}{{ loop.index }}{% endfor %}", "", False),
        ("# head\n{% for be in backends %}{{ be.name }}{% endfor %}", "", False),
        ("{% for be in backends %}{{ be.name }}{% else %}none{% endfor %}", "", False),
        ("{% for be in backends if be.name %}{{ be.name }}{% endfor %}", "", False),
        ("{% for be in backends %}{% include 'inc.j2' %}{% endfor %}", "{{ loop.index }}", False),
        ("{% for be in backends %}{% include 'inc.j2' %}{% endfor %}", "{{ backends }}", False),
        ("{% for be in backends %}{% include 'inc.j2' %}{% endfor %}", "{{ be.name }}", True),
        ("{% for be in backends %}{% include be.name %}{% endfor %}", "", False),
        ("{% for be in backends %}{% include 'gone.j2' ignore missing %}{% endfor %}", "", False),
    ],
)
def test_a_section_is_kept_item_by_item_only_when_it_prints_each_item_alone(
    main: str, included: str, itemwise: bool
) -> None:
    env = jinja2.Environment(loader=jinja2.DictLoader({"main.j2": main, "inc.j2": included}))
    assert render_module._itemwise(env, "main.j2", "backends") is itemwise


def test_a_template_including_what_may_be_missing_still_renders(tmp_path):
    """`include ... ignore missing` of a template that is not there renders nothing, as Jinja
    has it; deciding how to keep its runs must not refuse it."""
    text = (BUNDLED / "backends.j2").read_text()
    custom_text = text.replace(
        "\nbackend {{ be.name }}\n",
        "\n{% include 'extra.j2' ignore missing %}\nbackend {{ be.name }}\n",
    )
    assert custom_text != text
    custom = write(tmp_path / "t", "backends.j2", custom_text)
    assert render(model(), templates=str(custom)) == render(model())
