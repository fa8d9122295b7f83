"""An emulator of HAProxy's Data Plane API (dataplaneapi v3.4.2, REST under /v3) for tests
and benchmarks, driving a real HAProxy behind it: see emulator.py for the endpoints and the
deviations.

Modules: emulator.py (the class: lifecycle, routes, what tests inspect and inject),
configuration.py (config file and reload endpoints), servers.py and maps.py (the runtime server
and map entry endpoints, on the stats socket), reloads.py (reload ids and their outcomes),
server.py (the HTTP server: routing, auth, faults, the request log), wire.py (requests,
responses and errors as the API writes them), haproxy.py (the supervised HAProxy and its config
file).
"""

from testkit.dataplane.emulator import DataplaneEmulator

__all__ = ["DataplaneEmulator"]
