"""The `kube2haproxy` command: builds settings, wires the pieces, maps errors to exit codes.

No logic of its own: loading, translating, rendering and checking live in their modules. Options
that set `Settings` fields are generated from the field declarations (settings.py), each with its
`KUBE2HAPROXY_*` environment variable.
"""

from __future__ import annotations

import difflib
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from kube2haproxy import (
    __version__,
    configfile,
    dns,
    heap,
    keepalived,
    logs,
    manifests,
    settings,
)
from kube2haproxy.errors import ExitCode, InputError, Kube2HAProxyError, StrictError
from kube2haproxy.findings import Finding, Severity
from kube2haproxy.grammar import GrammarError, duration_ms
from kube2haproxy.layouts import layout
from kube2haproxy.render import Renderer, duration
from kube2haproxy.store import Store
from kube2haproxy.translate import Translation, pool_networks, translate

F = Callable[..., Any]


def _duration_option(ctx: click.Context, param: click.Parameter, value: Any) -> int:
    if isinstance(value, int):
        return value
    low = getattr(param, "duration_low", 1)
    try:
        return duration_ms(value, low_ms=low) if value not in ("0", 0) or low > 0 else 0
    except GrammarError as exc:
        raise click.BadParameter(f"{value!r}: {exc}", ctx, param) from exc


class _DurationOption(click.Option):
    """An option holding an HAProxy duration; `duration_low` is its least value in ms."""

    def __init__(self, *args: Any, duration_low: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.duration_low = duration_low


def settings_options(*sections: str, only: frozenset[str] | None = None) -> Callable[[F], F]:
    """Click options for the settings fields of the given sections (`only` these fields)."""

    def decorate(func: F) -> F:
        specs = [s for s in settings.option_specs(sections) if only is None or s.name in only]
        for spec in reversed(specs):
            names = (spec.flag, *spec.aliases)
            common: dict[str, Any] = {
                "help": spec.help,
                "envvar": list(spec.envvars),
                "show_envvar": True,
            }
            if spec.kind is settings.ValueKind.FLAG:
                name = spec.flag.removeprefix("--")
                option = click.option(
                    f"--{name}/--no-{name}", spec.name, default=spec.default, **common
                )
            elif spec.kind is settings.ValueKind.DURATION:
                option = click.option(
                    *names,
                    spec.name,
                    type=str,
                    metavar="DURATION",
                    default=duration(spec.default),
                    callback=_duration_option,
                    cls=_DurationOption,
                    duration_low=spec.limits.get("low", 1),
                    **common,
                )
            elif spec.kind is settings.ValueKind.INT:
                option = click.option(
                    *names,
                    spec.name,
                    type=click.IntRange(spec.limits["low"], spec.limits["high"]),
                    default=spec.default,
                    **common,
                )
            elif spec.kind is settings.ValueKind.CHOICE:
                option = click.option(
                    *names,
                    spec.name,
                    type=click.Choice(spec.choices),
                    default=spec.default,
                    **common,
                )
            else:
                metavar = "PATH" if spec.kind is settings.ValueKind.PATH else "TEXT"
                option = click.option(
                    *names, spec.name, type=str, metavar=metavar, default=spec.default, **common
                )
            func = option(func)
        return func

    return decorate


def settings_from(values: dict[str, Any]) -> settings.Settings:
    names = {spec.name for spec in settings.option_specs()}
    config = settings.build({k: v for k, v in values.items() if k in names})
    if config.run.listen:
        try:
            settings.parse_listen(config.run.listen)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--listen") from exc
    if config.translate.vip_mode == "pool":
        if not config.translate.vip_cidr:
            raise click.UsageError("--vip-mode pool needs --vip-cidr")
        try:
            pool_networks(config.translate)
        except GrammarError as exc:
            raise click.BadParameter(
                f"{config.translate.vip_cidr!r}: {exc}", param_hint="--vip-cidr"
            ) from exc
    elif config.translate.vip_cidr:
        click.echo(
            f"warning: --vip-cidr is ignored with --vip-mode {config.translate.vip_mode} "
            "(it is the pool of --vip-mode pool)",
            err=True,
        )
    for check, value, hint in (
        (dns.check_zone, config.publish.dns_zone, "--dns-zone"),
        (dns.check_nameserver, config.publish.dns_nameserver, "--dns-nameserver"),
    ):
        try:
            check(value)
        except dns.ZoneError as exc:
            raise click.BadParameter(str(exc), param_hint=hint) from exc
    publish = config.publish
    if publish.keepalived_config:
        if not publish.keepalived_interface:
            raise click.UsageError("--keepalived-config needs --keepalived-interface")
        try:
            keepalived.check_interface(publish.keepalived_interface)
        except keepalived.KeepalivedError as exc:
            raise click.BadParameter(str(exc), param_hint="--keepalived-interface") from exc
    return config


@click.group(
    context_settings={
        "help_option_names": ["-h", "--help"],
        "show_default": True,
        "max_content_width": 100,
    }
)
@click.version_option(__version__, prog_name="kube2haproxy")
def cli() -> None:
    """Serve Kubernetes Services from a central pool of HAProxy servers."""


def _filename_option(f: F) -> F:
    return click.option(
        "-f",
        "--filename",
        "paths",
        multiple=True,
        required=True,
        metavar="PATH",
        help="Manifest file or directory (YAML or JSON, multi-document, List kinds); "
        "'-' reads standard input. Repeatable.",
    )(f)


def _load_and_translate(
    paths: tuple[str, ...], config: settings.Settings
) -> tuple[list[Finding], Translation]:
    """The dry runs' input: the manifests' own findings, and their translation."""
    loaded = manifests.load(paths)
    store = Store()
    for (kind, key), obj in loaded.objects.items():
        store.put(kind, key, obj)
    heap.settle()
    with heap.paused():
        translation = translate(store.snapshot(), config.translate)
    return list(loaded.findings), translation


@cli.command()
@_filename_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the config here atomically instead of to standard output.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Validate with `haproxy -c`; on failure print HAProxy's report and leave -o untouched.",
)
@click.option(
    "--diff-against",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Print a unified diff from this config to the rendered one instead of the config.",
)
@click.option(
    "--exit-code", is_flag=True, help="With --diff-against: exit 1 when the configs differ."
)
@click.option("--strict", is_flag=True, help="Fail (exit 4) on any warning, writing nothing.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Also print informational findings (services skipped by design).",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not print the summary line.")
@settings_options("translate", "render", "haproxy")
def render(  # the dry run
    *,
    paths: tuple[str, ...],
    output: Path | None,
    check: bool,
    diff_against: Path | None,
    exit_code: bool,
    strict: bool,
    verbose: bool,
    quiet: bool,
    **values: Any,
) -> None:
    """Render haproxy.cfg from manifests, without a cluster (a dry run).

    \b
    kubectl get svc,endpointslices -A -o yaml > cluster.yaml
    kube2haproxy render -f cluster.yaml -o haproxy.cfg --check
    """
    config = settings_from(values)
    if output is not None and config.render.maps_dir is None:
        config = replace(
            config, render=replace(config.render, maps_dir=settings.maps_dir_beside(str(output)))
        )
    renderer = Renderer(config.render)  # template errors before any work
    loaded_findings, translation = _load_and_translate(paths, config)
    findings = [
        *loaded_findings,
        *translation.findings,
        *layout(config.render.frontend_layout).findings(translation.model),
    ]
    report(findings, verbose=verbose)
    warnings = [f for f in findings if f.severity is Severity.WARNING]
    if strict and warnings:
        raise StrictError(f"--strict: {len(warnings)} warning(s); nothing written")

    with heap.paused():
        text = renderer.render(translation.model)
    files = renderer.files(translation.model)
    check_output = ""
    if output is not None:
        configfile.write_files(renderer.maps_dir, files)
        staged = configfile.Staged(output, text)
        if check:
            check_output = staged.check(
                binary=config.haproxy.binary, timeout_s=config.haproxy.check_timeout_ms / 1000
            )
        staged.commit()
    elif check:
        check_output = _check_without_output(config, translation, text, files)
    if files and output is None:
        click.echo(
            f"note: the config refers to {len(files)} map file(s) in {renderer.maps_dir}, "
            "written only with -o (beside the config)",
            err=True,
        )
    if check_output:
        click.echo(check_output, err=True)

    differs = False
    if diff_against is not None:
        diff = unified_diff(diff_against, text, label=str(output) if output else "rendered")
        differs = bool(diff)
        click.echo(diff, nl=False)
    elif output is None:
        click.echo(text, nl=False)
    if not quiet:
        click.echo(summary(translation, warnings=len(warnings), checked=check), err=True)
    if differs and exit_code:
        sys.exit(ExitCode.DIFFERENCES)


@cli.command("dns")
@_filename_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["zone", "hosts"]),
    default="zone",
    help="An RFC 1035 zone file, or a hosts file.",
)
@click.option(
    "--serial",
    type=click.IntRange(0, 2**32 - 1),
    default=None,
    help="The zone's serial (default: the current time in seconds).",
)
@click.option("-v", "--verbose", is_flag=True, help="Also print informational findings.")
@settings_options("translate")
@settings_options("publish", only=frozenset({"dns_zone", "dns_nameserver", "dns_ttl_ms"}))
def dns_command(
    *, paths: tuple[str, ...], fmt: str, serial: int | None, verbose: bool, **values: Any
) -> None:
    """Print the DNS records of the services the pool serves (a dry run).

    \b
    kubectl get svc,endpointslices -A -o yaml | kube2haproxy dns -f -
    kube2haproxy dns -f cluster.yaml --vip-mode pool --vip-cidr 10.200.0.0/16 --format hosts
    """
    config = settings_from(values)
    zone = dns.check_zone(config.publish.dns_zone)
    loaded_findings, translation = _load_and_translate(paths, config)
    findings = [
        *loaded_findings,
        *translation.findings,
        *dns.srv_findings(translation.model, zone=zone),
    ]
    report([f for f in findings if dns.relevant(f)], verbose=verbose)
    found = dns.records(translation.model, zone=zone)
    if fmt == "hosts":
        click.echo(dns.hosts_file(found), nl=False)
    else:
        click.echo(
            dns.zone_file(
                found,
                zone=zone,
                serial=serial if serial is not None else int(time.time()),
                ttl_s=config.publish.dns_ttl_ms // 1000,
                nameserver=dns.check_nameserver(config.publish.dns_nameserver),
            ),
            nl=False,
        )


@cli.command()
@click.option(
    "-f",
    "--filename",
    "--manifests",
    "manifests",
    multiple=True,
    metavar="PATH",
    type=click.Path(exists=True),
    envvar=["KUBE2HAPROXY_FILENAME", "KUBE2HAPROXY_MANIFESTS"],
    show_envvar=True,
    help="Follow these manifest files or directories (repeatable) instead of the Kubernetes "
    "API; a file that fails to parse keeps its last good content. (--manifests: the former "
    "name.)",
)
@settings_options("translate", "render", "haproxy", "run", "kube", "publish")
def run(*, manifests: tuple[str, ...], **values: Any) -> None:
    """Keep HAProxy in step with the cluster (or with manifest files).

    \b
    Supervised (the controller runs HAProxy; no cluster needed with -f):
      kube2haproxy run -f demo/ --haproxy-bin haproxy
    Attached (HAProxy runs beside us, e.g. a sidecar sharing a volume):
      kube2haproxy run --kubeconfig ~/.kube/config \\
          --master-socket /run/haproxy/master.sock --haproxy-config /etc/haproxy/haproxy.cfg
    """
    # Imported here: the Kubernetes client takes half a second to import, `render` needs none.
    from kube2haproxy import runner  # noqa: PLC0415

    config = settings_from(values)
    logs.setup(level=config.run.log_level, fmt=config.run.log_format)
    runner.serve(config, manifests=manifests)


def _check_without_output(
    config: settings.Settings, translation: Translation, text: str, files: dict[str, str]
) -> str:
    """`render --check` to standard output: map files go to a temporary directory, with a
    config rendered to refer to them there."""
    timeout_s = config.haproxy.check_timeout_ms / 1000
    if not files:
        return configfile.check_text(text, binary=config.haproxy.binary, timeout_s=timeout_s)
    with tempfile.TemporaryDirectory(prefix="kube2haproxy-maps-") as tmp:
        there = Renderer(replace(config.render, maps_dir=tmp))
        configfile.write_files(Path(tmp), there.files(translation.model))
        return configfile.check_text(
            there.render(translation.model), binary=config.haproxy.binary, timeout_s=timeout_s
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


def report(findings: Sequence[Finding], *, verbose: bool) -> None:
    for finding in findings:
        if finding.severity is Severity.WARNING or verbose:
            click.echo(str(finding), err=True)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the command, map errors to exit codes (see errors.ExitCode)."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="kube2haproxy",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return ExitCode.USAGE if isinstance(exc, click.UsageError) else ExitCode.INPUT
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return ExitCode.INTERNAL
    except Kube2HAProxyError as exc:
        click.echo(f"error: {exc}", err=True)
        output = getattr(exc, "output", "")
        if output:
            click.echo(output, err=True)
        return int(exc.exit_code)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else ExitCode.INTERNAL
    except Exception:
        traceback.print_exc()
        click.echo(
            "error: internal error (a bug); please report it with the traceback above", err=True
        )
        return ExitCode.INTERNAL
    return ExitCode.OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
