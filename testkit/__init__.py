"""What the tests and the benchmarks share, beside the package and never shipped with it:
Kubernetes objects as plain dicts (`builders`), real HTTP backends on loopback addresses and the
clients that ask who answers (`backends`), a local Kubernetes API server speaking the list
and watch protocol (`fakeapi`), and HAProxy's Data Plane API in front of a real HAProxy
(`dataplane`). It may import kube2haproxy; kube2haproxy never imports it, and
it imports nothing from tests/ (pyproject.toml, [tool.importlinter])."""
