"""Slot stability: how many of a backend's other endpoints change server line when one endpoint
goes and another comes (a rollout step), with the slot layout the controller renders (kube2haproxy
/slots.py: CRC-32 of address:port, linear probing, blocks of --slots-block with --slots-free
spare). A moved endpoint is a server id that changes, which `balance source` hashing and ClientIP
stick tables notice; a reload of the same cluster would place every endpoint the same way.

    python bench/slots.py --endpoints 10 --trials 20000
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kube2haproxy import slots


def moved_fraction(rng: random.Random, endpoints: int, free: int, block: int) -> float:
    """One trial: random pod IPs in a /16, one removed and one added at the same count."""
    network = int(ipaddress.ip_address("10.244.0.0"))
    ips = [
        str(ipaddress.ip_address(network + n)) for n in rng.sample(range(1, 65_534), endpoints + 1)
    ]
    before = [(ip, 8080) for ip in ips[:endpoints]]
    after = [*before[1:], (ips[endpoints], 8080)]
    count = slots.slot_count(endpoints, free=free, block=block)
    old = dict(zip(before, slots.assign(before, count), strict=True))
    new = dict(zip(after, slots.assign(after, count), strict=True))
    kept = before[1:]
    return sum(old[e] != new[e] for e in kept) / len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--endpoints", type=int, nargs="+", default=[10])
    parser.add_argument("--trials", type=int, default=20_000)
    parser.add_argument("--slots-free", type=int, default=4)
    parser.add_argument("--slots-block", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{'endpoints':>9} {'lines':>5} {'moved (mean)':>12} {'trials with a move':>18}")
    for endpoints in args.endpoints:
        rng = random.Random(args.seed)
        fractions = [
            moved_fraction(rng, endpoints, args.slots_free, args.slots_block)
            for _ in range(args.trials)
        ]
        lines = slots.slot_count(endpoints, free=args.slots_free, block=args.slots_block)
        with_move = sum(f > 0 for f in fractions) / len(fractions)
        print(
            f"{endpoints:>9} {lines:>5} {statistics.mean(fractions):>11.1%} {with_move:>18.1%}",
            flush=True,
        )


if __name__ == "__main__":
    main()
