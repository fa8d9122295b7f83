"""dryrun: the `render` and `dns` commands' pipeline, without a cluster or an HAProxy to drive:
manifests are loaded and translated, the config rendered and, with -o, put in place by the same
code the appliers use (configfile.install), or checked beside a temporary copy of its maps.
The CLI only prints what these return."""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kube2haproxy import configfile, gc_tuning
from kube2haproxy.errors import InputError
from kube2haproxy.findings import Finding
from kube2haproxy.layouts import layout
from kube2haproxy.render import Renderer
from kube2haproxy.settings import RenderPaths, Settings, render_paths
from kube2haproxy.sources import manifests
from kube2haproxy.store import Store
from kube2haproxy.translate import Translation, translate

if TYPE_CHECKING:
    from kube2haproxy.status import Published


def load_and_translate(
    paths: tuple[str, ...], settings: Settings
) -> tuple[list[Finding], Translation]:
    """The manifests' findings then the translation's, and the translation."""
    findings, store = stored(paths)
    translation = translated(store, settings)
    return [*findings, *translation.findings], translation


def stored(paths: tuple[str, ...]) -> tuple[list[Finding], Store]:
    """The manifests' findings, and their objects in a store."""
    with gc_tuning.loading():
        loaded = manifests.load(paths)
        store = Store()
        for (kind, key), obj in loaded.objects.items():
            store.put(kind, key, obj)
    return list(loaded.findings), store


def translated(store: Store, settings: Settings) -> Translation:
    """The model of what the store holds, kept: frozen out of the collector's reach."""
    with gc_tuning.paused(keep=True):
        return translate(store.snapshot(), settings.translate)


def published(paths: tuple[str, ...], settings: Settings, *, now: float) -> Published:
    """What a controller following these manifests would publish once applied (without
    HAProxy's view): for `explain -f`."""
    findings, store = stored(paths)
    return published_of(store, settings, now=now, findings=findings)


def published_of(
    store: Store, settings: Settings, *, now: float, findings: Sequence[Finding] = ()
) -> Published:
    """What a controller holding `store` would publish once applied."""
    # Here, not at the top: `render` needs neither (status and plan are ~0.05 s of its start).
    from kube2haproxy import plan as planner  # noqa: PLC0415
    from kube2haproxy.status import Published, ServiceObjects  # noqa: PLC0415

    snapshot = store.snapshot()
    translation = translate(snapshot, settings.translate)
    chosen = layout(settings.render.frontend_layout)
    found = [*findings, *translation.findings, *chosen.findings(translation.model)]
    keys = {*snapshot.services, *snapshot.slices, *snapshot.endpoints}
    return Published(
        at=now,
        settings=settings,
        synced=True,
        ready=True,
        deployed=planner.loaded_state(translation.model, planner.Scope(chosen)),
        objects={
            key: ServiceObjects(
                snapshot.services.get(key),
                snapshot.slices.get(key, ()),
                snapshot.endpoints.get(key),
            )
            for key in keys
        },
        findings=frozenset(found),
    )


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    files: dict[str, str]  # the maps it refers to, by name
    maps_dir: Path  # where it says they are
    check_output: str  # warnings of `haproxy -c`, when asked


def renderer(settings: Settings, *, output: Path | None) -> Renderer:
    """The renderer of `render -o output` (or to standard output): built first, so a template
    error is reported before any work."""
    return Renderer(settings.render, render_paths(settings, output=_text(output)))


def render(
    translation: Translation,
    settings: Settings,
    renderer: Renderer,
    *,
    output: Path | None,
    check: bool,
) -> Rendered:
    """The config, written to `output` (atomically, its maps beside it) or not, and checked
    with `haproxy -c` when asked. CheckError (HAProxy's report) leaves `output` untouched."""
    model = translation.model
    with gc_tuning.paused():
        text = renderer.render(model)
    files = renderer.files(model)
    timeout_s = settings.haproxy.check_timeout_ms / 1000
    binary = settings.haproxy.binary if check else None
    check_output = ""
    if output is not None:
        installed = configfile.install(
            output,
            text,
            files=files,
            maps_dir=renderer.maps_dir,
            binary=binary,
            timeout_s=timeout_s,
        )
        check_output = installed.check_output
    elif binary is not None:
        check_output = _check_without_output(translation, settings, text, files)
    return Rendered(text, files, renderer.maps_dir, check_output)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _check_without_output(
    translation: Translation, settings: Settings, text: str, files: dict[str, str]
) -> str:
    """`render --check` to standard output: map files go to a temporary directory, with a
    config rendered to refer to them there."""
    timeout_s = settings.haproxy.check_timeout_ms / 1000
    binary = settings.haproxy.binary
    if not files:
        return configfile.check_text(text, binary=binary, timeout_s=timeout_s)
    with tempfile.TemporaryDirectory(prefix="kube2haproxy-maps-") as tmp:
        there = Renderer(
            settings.render, RenderPaths(render_paths(settings, output=None).runtime_socket, tmp)
        )
        configfile.write_files(Path(tmp), there.files(translation.model))
        return configfile.check_text(
            there.render(translation.model), binary=binary, timeout_s=timeout_s
        )


def unified_diff(old_path: Path, new_text: str, *, label: str) -> str:
    """From `old_path` (missing: empty, as for a first deploy) to `new_text`."""
    try:
        old_text = old_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old_text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--diff-against {old_path}: cannot read: {exc}") from exc
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile=str(old_path),
        tofile=label,
    )
    # difflib leaves a last line without its newline; diff(1) and patch(1) expect the marker.
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


def summary(translation: Translation, *, warnings: int, checked: bool) -> str:
    model = translation.model
    skipped = ", ".join(
        f"{reason.value} {count}" for reason, count in sorted(translation.skipped.items())
    )
    return (
        f"kube2haproxy: {len(model.services)} services, {len(model.frontends)} frontends, "
        f"{model.server_count} servers; skipped: {skipped or 'none'}; {warnings} warning(s)"
        + ("; haproxy -c: valid" if checked else "")
    )
