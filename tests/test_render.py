"""render: templates, user overrides, StrictUndefined and the output guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube2haproxy.errors import TemplateError
from kube2haproxy.model import Model
from kube2haproxy.render import BUNDLED, duration
from testkit.builders import endpoint_slice, service
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
