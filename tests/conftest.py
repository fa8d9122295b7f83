"""Shared pytest configuration.

`haproxy_bin` is the real haproxy binary, once per version under test: every test that starts
HAProxy or runs `haproxy -c` takes it, so KUBE2HAPROXY_TEST_HAPROXY=path[,path...] runs those
tests again on each (CI: Debian bookworm's 2.6.12 and 3.0.11 built from trixie's sources).
Unset, the `haproxy` on PATH.
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

from kube2haproxy import configfile

# Rendering a cluster takes milliseconds, but CI machines are shared: no per-example deadline.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def haproxy_binaries() -> list[str]:
    """The binaries under test. Missing is a failure, not a skip: CI installs them."""
    listed = os.environ.get("KUBE2HAPROXY_TEST_HAPROXY") or os.environ.get(
        "KUBE2HAPROXY_HAPROXY_BIN", "haproxy"
    )
    found = []
    for name in listed.split(","):
        path = shutil.which(name.strip())
        assert path, f"{name}: no haproxy there: run scripts/install (apt-get install -y haproxy)"
        found.append(path)
    return found


@functools.cache
def _version_id(path: str) -> str:
    return str(configfile.binary_version(path))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "haproxy_bin" in metafunc.fixturenames:
        binaries = haproxy_binaries()
        metafunc.parametrize(
            "haproxy_bin", binaries, ids=[_version_id(b) for b in binaries], scope="session"
        )
