"""haproxy: the real HAProxy behind the emulator, and the config file dataplaneapi manages.

Owns the working directory: `haproxy.cfg` (its first line `# _version=N`, dataplaneapi's
configuration version), `haproxy.cfg.lkg` (the last config HAProxy loaded, which a refused
reload puts back, as dataplaneapi's reload agent does), `master.sock` (the master CLI),
`admin.sock` (the stats socket every config must declare for the runtime endpoints) and, unless
told otherwise, `maps/`.

HAProxy runs in master-worker mode under the project's own Supervisor; configs are checked with
the project's `haproxy -c` wrapper, reloads go through its MasterCLI (confirmed as the running
version allows) and runtime commands through its RuntimeAPI. Nothing here is HTTP.
"""

from __future__ import annotations

import contextlib
import tempfile
import textwrap
import time
from pathlib import Path

from kube2haproxy import configfile
from kube2haproxy.appliers.master import MasterCLI, Processes
from kube2haproxy.appliers.runtime import RuntimeAPI
from kube2haproxy.appliers.supervisor import Supervisor
from kube2haproxy.capabilities import Capabilities, capabilities
from kube2haproxy.errors import CheckError, ConfigRefused, HAProxyUnavailable

VERSION_PREFIX = "# _version="


def version_of(text: str) -> int:
    """The configuration version a config text carries; 1 without a version line."""
    for line in text.splitlines():
        if line.startswith(VERSION_PREFIX):
            try:
                return int(line.removeprefix(VERSION_PREFIX).strip())
            except ValueError:
                return 0  # as client-native reads an unreadable one
    return 1


def with_version(text: str, version: int) -> str:
    """The text with its version lines dropped and `# _version=<version>` as its first line."""
    kept = [line for line in text.splitlines() if not line.startswith(VERSION_PREFIX)]
    return f"{VERSION_PREFIX}{version}\n" + "".join(f"{line}\n" for line in kept)


class DrivenHAProxy:
    """A supervised HAProxy and the config file it loads."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        initial_config: str | None = None,
        maps_dir: Path | None = None,
        check_timeout_s: float = 30.0,
        reload_timeout_s: float = 30.0,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config = workdir / "haproxy.cfg"
        self.lkg = workdir / "haproxy.cfg.lkg"
        self.stats_socket = workdir / "admin.sock"
        self.maps_dir = maps_dir if maps_dir is not None else workdir / "maps"
        self.check_timeout_s = check_timeout_s
        self.reload_timeout_s = reload_timeout_s
        self.capabilities: Capabilities = capabilities(configfile.binary_version(binary))
        self._initial = initial_config if initial_config is not None else self.minimal_config()
        # A short backoff: a test that kills HAProxy wants it back quickly.
        self.supervisor = Supervisor(
            binary=binary,
            config=str(self.config),
            master_socket=str(workdir / "master.sock"),
            restart_backoff_s=(0.2, 2.0),
        )
        self.runtime = RuntimeAPI(str(self.stats_socket))

    @property
    def master(self) -> MasterCLI:
        return self.supervisor.master

    def minimal_config(self) -> str:
        """What HAProxy starts with unless told otherwise: no listener (every supported version
        starts without one), only the stats socket the runtime endpoints need."""
        return textwrap.dedent(f"""\
            global
                stats socket {self.stats_socket} mode 600 level admin
            defaults
                mode tcp
                timeout connect 2s
                timeout client 10s
                timeout server 10s
            """)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.maps_dir.mkdir(parents=True, exist_ok=True)
        text = self._initial
        if not text.startswith(VERSION_PREFIX):
            text = with_version(text, 1)
        configfile.write_atomic(self.config, text)
        self.supervisor.start(ready_timeout_s=self.reload_timeout_s)
        # dataplaneapi assumes the config it finds at startup is good.
        configfile.write_atomic(self.lkg, text)

    def stop(self) -> None:
        self.supervisor.stop(grace_s=2.0)

    def up(self) -> bool:
        """The master answers (what the emulator's /health reports)."""
        try:
            self.master.processes()
        except HAProxyUnavailable:
            return False
        return True

    def processes(self) -> Processes:
        return self.master.processes()

    # --- the config file ------------------------------------------------------------------

    def read(self) -> str:
        return self.config.read_text(encoding="utf-8")

    def version(self) -> int:
        try:
            return version_of(self.read())
        except FileNotFoundError:
            return 0

    def write(self, text: str) -> None:
        configfile.write_atomic(self.config, text)

    def check(self, text: str) -> None:
        """`haproxy -c` on the text in a temporary file (as dataplaneapi checks a transaction
        file); CheckError with HAProxy's output, which names the config file instead."""
        with tempfile.TemporaryDirectory(prefix="dataplane-check-") as tmp:
            candidate = Path(tmp) / self.config.name
            candidate.write_text(text, encoding="utf-8")
            try:
                configfile.check(candidate, binary=self.binary, timeout_s=self.check_timeout_s)
            except CheckError as exc:
                output = exc.output.replace(str(candidate), str(self.config))
                raise CheckError(str(exc), output=output) from exc

    def reload(self) -> None:
        """Reload HAProxy with the file on disk, confirmed. On success the file becomes the
        last known good one; when HAProxy refuses it (ConfigRefused) or no outcome comes
        (HAProxyUnavailable), the last known good file is put back and the error raised with
        what HAProxy printed in its `output`."""
        before = list(self.supervisor.last_output)
        try:
            self.master.reload(self.capabilities, timeout_s=self.reload_timeout_s)
        except (ConfigRefused, HAProxyUnavailable) as exc:
            with contextlib.suppress(FileNotFoundError):
                self.write(self.lkg.read_text(encoding="utf-8"))
            # 2.6 answers a reload with nothing: what it printed says why it refused.
            output = getattr(exc, "output", "") or self._printed_since(before)
            raise ConfigRefused(str(exc), output=output) from exc
        configfile.write_atomic(self.lkg, self.read())

    def _printed_since(self, before: list[str]) -> str:
        time.sleep(0.1)  # its last lines may still be in the pipe
        lines = self.supervisor.last_output
        start = 0
        if before and before[-1] in lines:
            start = len(lines) - lines[::-1].index(before[-1])
        return "\n".join(lines[start:])

    # --- the stats socket -----------------------------------------------------------------

    def command(self, command: str) -> str:
        """One runtime command on the worker's stats socket: its whole answer (a dump may hold
        empty lines), trailing newlines stripped. HAProxyUnavailable when nothing answers."""
        if ";" in command or "\n" in command:
            raise ValueError(f"one runtime command at a time: {command!r}")
        return self.runtime.command(command).rstrip("\n")
