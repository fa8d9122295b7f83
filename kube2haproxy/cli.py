"""The `kube2haproxy` command: builds settings, wires the pieces, maps errors to exit codes.

No logic of its own: loading, translating, rendering and checking live in their modules. Options
that set `Settings` fields are generated from the field declarations (settings.py), each with its
`KUBE2HAPROXY_*` environment variable.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from kube2haproxy import __version__, dns, dryrun, logs, selectors, settings
from kube2haproxy.errors import ExitCode, GrammarError, InputError, Kube2HAProxyError, StrictError
from kube2haproxy.findings import Finding, Severity
from kube2haproxy.grammar import duration_ms
from kube2haproxy.layouts import layout
from kube2haproxy.options import OptionSpec, ValueKind
from kube2haproxy.render import duration
from kube2haproxy.resources import Key

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


# `render` checks configs but never loads one, and names only the paths its config names.
RENDER_HAPROXY = frozenset({"binary", "check_timeout_ms"})
RENDER_PATHS = frozenset({"runtime_socket", "maps_dir"})


def settings_options(*sections: str, only: frozenset[str] | None = None) -> Callable[[F], F]:
    """Click options for the settings fields of the given sections (`only` these fields)."""

    def decorate(func: F) -> F:
        chosen = [s for s in settings.specs(sections) if only is None or s.name in only]
        for spec in reversed(chosen):
            func = _click_option(spec)(func)
        return func

    return decorate


def _click_option(spec: OptionSpec) -> Callable[[F], F]:
    names = (spec.flag, *spec.aliases)
    common: dict[str, Any] = {"help": spec.help, "envvar": list(spec.envvars), "show_envvar": True}
    if spec.kind is ValueKind.FLAG:
        name = spec.flag.removeprefix("--")
        return click.option(f"--{name}/--no-{name}", spec.name, default=spec.default, **common)
    if spec.kind is ValueKind.DURATION:
        return click.option(
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
    if spec.kind is ValueKind.INT:
        kind: Any = click.IntRange(spec.limits["low"], spec.limits["high"])
        return click.option(*names, spec.name, type=kind, default=spec.default, **common)
    if spec.kind is ValueKind.CHOICE:
        kind = click.Choice(spec.choices)
        return click.option(*names, spec.name, type=kind, default=spec.default, **common)
    metavar = "PATH" if spec.kind is ValueKind.PATH else "TEXT"
    return click.option(
        *names, spec.name, type=str, metavar=metavar, default=spec.default, **common
    )


def settings_from(values: dict[str, Any]) -> settings.Settings:
    """The settings of a command's options; a setting that cannot be used is a usage error
    naming its flag, and a note (a setting with no effect) goes to standard error."""
    names = {spec.name for spec in settings.specs()}
    try:
        chosen, notes = settings.build({k: v for k, v in values.items() if k in names})
    except settings.SettingError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.flag) from exc
    for note in notes:
        click.echo(f"warning: {note}", err=True)
    return chosen


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
@settings_options("translate", "render")
@settings_options("haproxy", only=RENDER_HAPROXY)
@settings_options("paths", only=RENDER_PATHS)
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
    chosen = settings_from(values)
    renderer = dryrun.renderer(chosen, output=output)  # template errors before any work
    findings, translation = dryrun.load_and_translate(paths, chosen)
    findings += layout(chosen.render.frontend_layout).findings(translation.model)
    report(findings, verbose=verbose)
    warnings = [f for f in findings if f.severity is Severity.WARNING]
    if strict and warnings:
        raise StrictError(f"--strict: {len(warnings)} warning(s); nothing written")
    rendered = dryrun.render(translation, chosen, renderer, output=output, check=check)
    if rendered.files and output is None:
        click.echo(
            f"note: the config refers to {len(rendered.files)} map file(s) in "
            f"{rendered.maps_dir}, written only with -o (beside the config)",
            err=True,
        )
    if rendered.check_output:
        click.echo(rendered.check_output, err=True)

    differs = False
    if diff_against is not None:
        label = str(output) if output else "rendered"
        diff = dryrun.unified_diff(diff_against, rendered.text, label=label)
        differs = bool(diff)
        click.echo(diff, nl=False)
    elif output is None:
        click.echo(rendered.text, nl=False)
    if not quiet:
        click.echo(dryrun.summary(translation, warnings=len(warnings), checked=check), err=True)
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
    chosen = settings_from(values)
    zone = dns.check_zone(chosen.publish.dns_zone)
    findings, translation = dryrun.load_and_translate(paths, chosen)
    findings += dns.srv_findings(translation.model, zone=zone)
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
                ttl_s=chosen.publish.dns_ttl_ms // 1000,
                nameserver=dns.check_nameserver(chosen.publish.dns_nameserver),
            ),
            nl=False,
        )


def _manifests_option(help_text: str) -> Callable[[F], F]:
    """`run -f`: manifests followed instead of the API (and `doctor -f`: the same files)."""
    return click.option(
        "-f",
        "--filename",
        "--manifests",
        "manifests",
        multiple=True,
        metavar="PATH",
        type=click.Path(exists=True),
        envvar=["KUBE2HAPROXY_FILENAME", "KUBE2HAPROXY_MANIFESTS"],
        show_envvar=True,
        help=help_text,
    )


@cli.command()
@_manifests_option(
    "Follow these manifest files or directories (repeatable) instead of the Kubernetes "
    "API; a file that fails to parse keeps its last good content. (--manifests: the former "
    "name.)"
)
@settings_options(
    "translate", "render", "paths", "haproxy", "applier", "timing", "observe", "kube", "publish"
)
def run(*, manifests: tuple[str, ...], **values: Any) -> None:
    """Keep HAProxy in step with the cluster (or with manifest files).

    \b
    Supervised (the controller runs HAProxy; no cluster needed with -f):
      kube2haproxy run -f demo/ --haproxy-bin haproxy
    Attached (HAProxy runs beside us, e.g. a sidecar sharing a volume):
      kube2haproxy run --kubeconfig ~/.kube/config \\
          --master-socket /run/haproxy/master.sock --haproxy-config /etc/haproxy/haproxy.cfg
    Through HAProxy's Data Plane API (HAProxy may run on another host):
      kube2haproxy run --applier dataplane --dataplane-url http://haproxy:5555 \\
          --dataplane-username kube2haproxy --dataplane-password-file /etc/kube2haproxy/pw
    """
    # Imported here: the Kubernetes client takes half a second to import, `render` needs none.
    from kube2haproxy import runner  # noqa: PLC0415

    chosen = settings_from(values)
    logs.setup(level=chosen.observe.log_level, fmt=chosen.observe.log_format)
    runner.serve(chosen, manifests=manifests)


@cli.command("doctor")
@_manifests_option(
    "Manifest files or directories, as `run -f` follows them: their Services give the "
    "listeners and VIPs to check (the API is then not checked, as `run -f` does not use it)."
)
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    help="One line per check, or a JSON object {status, checks: [{name, status, detail, fix}]}.",
)
@click.option(
    "--skip",
    multiple=True,
    metavar="CHECK",
    help="Leave out this check, by the name it prints (repeatable).",
)
@settings_options("translate", "render", "paths", "haproxy", "kube", "publish")
def doctor_command(
    *, manifests: tuple[str, ...], fmt: str, skip: tuple[str, ...], **values: Any
) -> None:
    """Check this host for what `run` needs, with the same settings: one line per check (ok,
    warn, fail) with the command that fixes it; exit 1 when a check fails.

    \b
    kube2haproxy doctor                      # in the controller's container: its settings
    kube2haproxy doctor -f cluster.yaml      # with the listeners of these Services
    kube2haproxy doctor -o json
    """
    # For this command only: the doctor package costs every command a fifth of a second.
    from kube2haproxy import doctor  # noqa: PLC0415

    unknown = sorted(set(skip) - set(doctor.CHECKS))
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: no such check (one of {', '.join(doctor.CHECKS)})",
            param_hint="--skip",
        )
    chosen = settings_from(values)
    checks = doctor.examine(
        chosen,
        manifests=manifests,
        host=doctor.Host.local(),
        environ=dict(os.environ),
        tmp=tempfile.gettempdir(),
        skip=frozenset(skip),
    )
    click.echo(doctor.as_json(checks) if fmt == "json" else doctor.text(checks), nl=False)
    if doctor.worst(checks) is doctor.Status.FAIL:
        sys.exit(ExitCode.CHECKS_FAILED)


def _timeout_option(f: F) -> F:
    return click.option(
        "--timeout",
        "timeout_ms",
        type=str,
        metavar="DURATION",
        default="10s",
        callback=_duration_option,
        cls=_DurationOption,
        help="Longest to wait for the controller's answer.",
    )(f)


@cli.command("status")
@click.argument("name", required=False)
@click.option("-n", "--namespace", help="Only the services of this namespace.")
@click.option(
    "-l", "--selector", default="", help="Only the services matching this label selector."
)
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(["wide", "json"]),
    help="wide: every VIP, frontend, HAProxy's view by state, the whole reason; json: all.",
)
@_timeout_option
@settings_options("observe", only=frozenset({"listen"}))
def status_command(
    *,
    name: str | None,
    namespace: str | None,
    selector: str,
    fmt: str | None,
    timeout_ms: int,
    **values: Any,
) -> None:
    """Ask a running controller what it serves: every service port, its VIPs, its backend, its
    endpoints as HAProxy sees them, and why a port is skipped or waits. NAME filters by
    service name, or namespace/name with a slash (a glob: 'web*', 'shop/*').

    \b
    kube2haproxy status
    kube2haproxy status -n shop -l app=web -o wide
    kube2haproxy status --listen 10.0.0.5:9333 'shop/*'
    """
    from kube2haproxy import remote, tables  # noqa: PLC0415 - not needed by render and run
    from kube2haproxy.status import StatusReport  # noqa: PLC0415
    from kube2haproxy.wire import encode  # noqa: PLC0415

    chosen = settings_from(values)
    try:
        selectors.parse(selector)
    except GrammarError as exc:
        raise click.BadParameter(str(exc), param_hint="-l/--selector") from exc
    url = remote.url_of(
        chosen.observe.listen,
        "/status",
        {"namespace": namespace or "", "selector": selector, "name": name or ""},
    )
    found = remote.fetch(StatusReport, url, kind="Status", timeout_s=timeout_ms / 1000)
    if fmt == "json":
        click.echo(json.dumps(encode(found), indent=2))
        return
    click.echo(tables.summary(found), nl=False)
    click.echo()
    click.echo(tables.status_table(found, wide=fmt == "wide"), nl=False)


@cli.command("explain")
@click.argument("target", metavar="NAMESPACE/NAME[:PORT]")
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    metavar="PATH",
    help="Explain from these manifests (as `render` reads them) instead of a running "
    "controller. Repeatable.",
)
@click.option("-o", "--output", "fmt", type=click.Choice(["json"]), help="json: all of it.")
@_timeout_option
@settings_options("observe", only=frozenset({"listen"}))
@settings_options("translate")
@settings_options("render", only=frozenset({"frontend_layout"}))
@settings_options("publish", only=frozenset({"dns_zone"}))
def explain_command(
    *, target: str, paths: tuple[str, ...], fmt: str | None, timeout_ms: int, **values: Any
) -> None:
    """The whole path of one Service: DNS records, VIP:port, frontend, backend and every
    endpoint (pod, node, conditions, server line, HAProxy's view), and for each endpoint or
    port left out, the rule that left it out. From a running controller (--listen), or with -f
    from manifests (with the translation flags `render` takes).

    \b
    kube2haproxy explain shop/web
    kube2haproxy explain shop/web:http -o json
    kubectl get svc,endpointslices -A -o yaml | kube2haproxy explain -f - shop/web
    """
    from kube2haproxy import remote, tables  # noqa: PLC0415 - not needed by render and run
    from kube2haproxy.explain import Explanation, explain  # noqa: PLC0415
    from kube2haproxy.wire import encode  # noqa: PLC0415

    chosen = settings_from(values)
    key, port = _target(target)
    found: Explanation | None
    if paths:
        published = dryrun.published(paths, chosen, now=time.time())
        found = explain(published, key, now=published.at, source="manifests")
        if found is None:
            raise InputError(f"Service {key}: not in the manifests")
    else:
        path = f"/status/{quote(key.namespace, safe='')}/{quote(key.name, safe='')}"
        url = remote.url_of(chosen.observe.listen, path)
        found = remote.fetch(Explanation, url, kind="Explanation", timeout_s=timeout_ms / 1000)
    if port is not None:
        found = found.only(port)
        if not found.ports:
            raise InputError(f"Service {key} has no port {port!r}")
    if fmt == "json":
        click.echo(json.dumps(encode(found), indent=2))
    else:
        click.echo(tables.explanation(found), nl=False)


def _target(text: str) -> tuple[Key, str | None]:
    """NAMESPACE/NAME[:PORT] (a NAME alone is in namespace default, as kubectl has it)."""
    rest, _, port = text.partition(":")
    namespace, slash, name = rest.rpartition("/")
    if not slash:
        namespace = "default"
    if not name or not namespace or "/" in namespace:
        raise click.BadParameter(f"{text!r}: expected NAMESPACE/NAME[:PORT]", param_hint="TARGET")
    return Key(namespace, name), port or None


def report(findings: Sequence[Finding], *, verbose: bool) -> None:
    for finding in findings:
        if finding.severity is Severity.WARNING or verbose:
            click.echo(str(finding), err=True)


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
