"""Tests of configfile: staging beside the destination, atomic install, and `haproxy -c`."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from kube2haproxy import configfile
from kube2haproxy.errors import CheckError, EnvironmentProblem, ExitCode

VALID = """\
global
    stats socket {socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 5s
    timeout client 1m
    timeout server 1m

frontend fe_web
    bind 127.0.0.1:18080
    default_backend web

backend web
    server s1 10.0.0.1:8080
"""

INVALID = """\
defaults
    mode tcp
    timeout connect 5s
    frobnicate yes

frontend fe_web
    bind 127.0.0.1:18080
"""

# Valid, but HAProxy warns about it (and still exits 0).
WARNS = """\
frontend fe_web
    mode tcp
    bind 127.0.0.1:18080
    default_backend web

backend web
    mode tcp
    server s1 10.0.0.1:8080
"""


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def fake_binary(tmp_path: Path, body: str, name: str = "haproxy") -> Path:
    script = tmp_path / "bin" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return script


def valid_config(tmp_path: Path) -> str:
    return VALID.format(socket=tmp_path / "admin.sock")


# --- Staged -----------------------------------------------------------------------------------


def test_staged_writes_a_temporary_file_beside_the_destination(tmp_path: Path) -> None:
    destination = tmp_path / "haproxy.cfg"
    staged = configfile.Staged(destination, "global\n")
    try:
        assert staged.path.parent == tmp_path
        assert staged.path.name.startswith(".haproxy.cfg.")
        assert staged.path.name.endswith(".tmp")
        assert staged.path.read_text() == "global\n"
        assert not destination.exists()
    finally:
        staged.discard()


def test_commit_renames_over_the_destination(tmp_path: Path) -> None:
    destination = tmp_path / "haproxy.cfg"
    destination.write_text("old\n")
    old_inode = destination.stat().st_ino
    with destination.open() as reader:  # a reader of the old file keeps seeing it whole
        staged = configfile.Staged(destination, "new\n")
        staged_inode = staged.path.stat().st_ino
        assert destination.read_text() == "old\n"
        staged.commit()
        assert reader.read() == "old\n"
    assert destination.read_text() == "new\n"
    assert destination.stat().st_ino == staged_inode != old_inode
    assert not staged.path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg"]


def test_discard_removes_the_temporary_file_and_keeps_the_destination(tmp_path: Path) -> None:
    destination = tmp_path / "haproxy.cfg"
    destination.write_bytes(b"previous config\n")
    staged = configfile.Staged(destination, "rejected\n")
    assert staged.path.exists()
    staged.discard()
    staged.discard()  # twice is harmless
    assert not staged.path.exists()
    assert destination.read_bytes() == b"previous config\n"
    assert [p.name for p in tmp_path.iterdir()] == ["haproxy.cfg"]


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_commit_preserves_the_mode_of_an_existing_destination(tmp_path: Path, mode: int) -> None:
    destination = tmp_path / "haproxy.cfg"
    destination.write_text("old\n")
    destination.chmod(mode)
    staged = configfile.Staged(destination, "new\n")
    assert mode_of(staged.path) == mode  # already while staged: haproxy -c reads it as installed
    staged.commit()
    assert mode_of(destination) == mode
    assert destination.read_text() == "new\n"


def test_new_destination_gets_the_default_mode_whatever_the_umask(tmp_path: Path) -> None:
    destination = tmp_path / "haproxy.cfg"
    old_umask = os.umask(0o077)
    try:
        configfile.Staged(destination, "new\n").commit()
    finally:
        os.umask(old_umask)
    assert mode_of(destination) == configfile.DEFAULT_MODE == 0o644


def test_staged_in_a_missing_directory_is_an_environment_problem(tmp_path: Path) -> None:
    destination = tmp_path / "no" / "such" / "haproxy.cfg"
    with pytest.raises(EnvironmentProblem, match="cannot create a file beside it") as caught:
        configfile.Staged(destination, "x\n")
    assert str(destination) in str(caught.value)
    assert caught.value.exit_code is ExitCode.ENVIRONMENT


def test_failed_commit_is_an_environment_problem_and_leaves_no_temporary(tmp_path: Path) -> None:
    destination = tmp_path / "haproxy.cfg"
    destination.mkdir()  # cannot rename a file over a directory
    staged = configfile.Staged(destination, "x\n")
    with pytest.raises(EnvironmentProblem, match="cannot install"):
        staged.commit()
    assert not staged.path.exists()
    assert destination.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["haproxy.cfg"]


# --- write_atomic -----------------------------------------------------------------------------


def test_write_atomic_creates_and_replaces(tmp_path: Path) -> None:
    destination = tmp_path / "haproxy.cfg"
    configfile.write_atomic(destination, "first\n")
    assert destination.read_text() == "first\n"
    destination.chmod(0o600)
    text = "# ünïcödé comment\nsecond\n" * 1000
    configfile.write_atomic(destination, text)
    assert destination.read_text(encoding="utf-8") == text
    assert mode_of(destination) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["haproxy.cfg"]


def test_write_atomic_failure_leaves_the_destination_alone(tmp_path: Path) -> None:
    destination = tmp_path / "haproxy.cfg"
    destination.mkdir()
    (destination / "keep").write_text("kept")
    with pytest.raises(EnvironmentProblem):
        configfile.write_atomic(destination, "x\n")
    assert (destination / "keep").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["haproxy.cfg"]


# --- check (the real haproxy) -----------------------------------------------------------------


def test_check_of_a_valid_config_returns_nothing(tmp_path: Path, haproxy_bin: str) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(valid_config(tmp_path))
    assert configfile.check(path, binary=haproxy_bin, timeout_s=30) == ""


def test_check_returns_haproxy_warnings_of_a_valid_config(tmp_path: Path, haproxy_bin: str) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(WARNS)
    output = configfile.check(path, binary=haproxy_bin, timeout_s=30)
    assert "[WARNING]" in output
    assert "missing timeouts for backend 'web'" in output


def test_check_of_an_invalid_config_raises_with_haproxy_output(
    tmp_path: Path, haproxy_bin: str
) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(INVALID)
    with pytest.raises(CheckError, match=r"haproxy -c rejected the config \(exit 1\)") as caught:
        configfile.check(path, binary=haproxy_bin, timeout_s=30)
    output = caught.value.output
    assert "[ALERT]" in output
    assert f"parsing [{path}:4] : unknown keyword 'frobnicate'" in output
    assert caught.value.exit_code is ExitCode.CHECK


def test_check_of_a_config_without_listener_raises(tmp_path: Path, haproxy_bin: str) -> None:
    # No error, but HAProxy would not start (exit 2): not a config to install.
    path = tmp_path / "haproxy.cfg"
    path.write_text("defaults\n    mode tcp\n")
    with pytest.raises(CheckError, match=r"exit 2") as caught:
        configfile.check(path, binary=haproxy_bin, timeout_s=30)
    assert "no listener" in caught.value.output


def test_check_passes_the_file_to_haproxy_dash_c(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, 'echo "args: $*"')
    path = tmp_path / "haproxy.cfg"
    path.write_text("anything\n")
    assert configfile.check(path, binary=str(binary), timeout_s=30) == f"args: -c -f {path}"


def test_check_with_a_missing_binary_is_an_environment_problem(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(valid_config(tmp_path))
    missing = tmp_path / "nonexistent" / "haproxy"
    with pytest.raises(EnvironmentProblem, match=f"cannot run {missing}: not found") as caught:
        configfile.check(path, binary=str(missing), timeout_s=30)
    assert caught.value.exit_code is ExitCode.ENVIRONMENT
    with pytest.raises(EnvironmentProblem, match="not found"):
        configfile.check(path, binary="kube2haproxy-no-such-haproxy", timeout_s=30)


def test_check_with_a_non_executable_binary_is_an_environment_problem(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, "exit 0")
    binary.chmod(0o644)
    path = tmp_path / "haproxy.cfg"
    path.write_text("x\n")
    with pytest.raises(EnvironmentProblem, match=f"cannot run {binary}"):
        configfile.check(path, binary=str(binary), timeout_s=30)


def test_a_check_killed_by_the_kernel_says_so(tmp_path: Path) -> None:
    """The OOM killer's SIGKILL is not HAProxy rejecting the config."""
    binary = fake_binary(tmp_path, "echo parsing\nkill -KILL $$")
    path = tmp_path / "haproxy.cfg"
    path.write_text(valid_config(tmp_path))
    with pytest.raises(CheckError, match=r"killed by SIGKILL \(out of memory\?") as caught:
        configfile.check(path, binary=str(binary), timeout_s=30)
    assert caught.value.output == "parsing"


def test_check_timeout_raises_check_error_with_partial_output(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, "echo still parsing\nexec sleep 30")
    path = tmp_path / "haproxy.cfg"
    path.write_text(valid_config(tmp_path))
    started = time.monotonic()
    with pytest.raises(CheckError, match=r"did not finish within 0\.5s") as caught:
        configfile.check(path, binary=str(binary), timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert "still parsing" in caught.value.output
    assert caught.value.exit_code is ExitCode.CHECK


def test_check_text_valid_and_invalid(tmp_path: Path, haproxy_bin: str) -> None:
    assert configfile.check_text(valid_config(tmp_path), binary=haproxy_bin, timeout_s=30) == ""
    with pytest.raises(CheckError) as caught:
        configfile.check_text(INVALID, binary=haproxy_bin, timeout_s=30)
    output = caught.value.output
    assert "unknown keyword 'frobnicate'" in output
    # HAProxy's report names the rendered text and its lines, not the temporary file it
    # checked (gone afterwards, and a path the user never saw).
    line = int(output.split("parsing [<rendered>:", 1)[1].split("]", 1)[0])
    assert "frobnicate" in INVALID.splitlines()[line - 1]
    assert "kube2haproxy-" not in output


def test_writer_lands_the_newest_text_and_flush_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    writer = configfile.Writer(path)
    for i in range(200):
        writer.submit(f"version {i}\n" * 1000)
    writer.flush()
    assert path.read_text() == "version 199\n" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["haproxy.cfg"]


def test_a_staged_config_that_fails_the_check_is_kept_as_rejected(
    tmp_path: Path, haproxy_bin: str
) -> None:
    destination = tmp_path / "haproxy.cfg"
    destination.write_text("# the last good config\n")
    staged = configfile.Staged(destination, INVALID)
    with pytest.raises(CheckError) as caught:
        staged.check(binary=haproxy_bin, timeout_s=30)
    rejected = tmp_path / "haproxy.cfg.rejected"
    assert str(caught.value).endswith(f"; the config is kept in {rejected}")
    assert rejected.read_text() == INVALID
    assert destination.read_text() == "# the last good config\n"
    assert f"parsing [{rejected}:" in caught.value.output
    assert ".tmp" not in caught.value.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg", "haproxy.cfg.rejected"]
    # The next refused config replaces it.
    with pytest.raises(CheckError):
        configfile.Staged(destination, INVALID + "    more-junk\n").check(
            binary=haproxy_bin, timeout_s=30
        )
    assert rejected.read_text().endswith("more-junk\n")
