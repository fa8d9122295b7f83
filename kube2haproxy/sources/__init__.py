"""sources: what turns the outside world into events (events.py), one implementation per
module: `kube` (the Kubernetes API: list and watch, the only importer of the `kubernetes`
client) and `manifests` (files, followed with watchdog). Nothing here knows about HAProxy."""
