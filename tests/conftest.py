"""Shared pytest configuration."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

# Rendering a cluster takes milliseconds, but CI machines are shared: no per-example deadline.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    """The real haproxy binary. Missing is a failure, not a skip: CI installs it."""
    path = shutil.which(os.environ.get("KUBE2HAPROXY_HAPROXY_BIN", "haproxy"))
    assert path, "haproxy is not installed: run scripts/install (apt-get install -y haproxy)"
    return path
