"""kube2haproxy: Kubernetes Services served by a central pool of HAProxy servers."""

from __future__ import annotations

__version__ = "0.1.0"
