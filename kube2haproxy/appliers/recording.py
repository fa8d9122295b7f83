"""recording: an applier that keeps every plan and config it is given; for dry runs and tests."""

from __future__ import annotations

from collections.abc import Callable

from kube2haproxy.appliers import ApplyReport, Config, Outcome, Running, go_on
from kube2haproxy.deployed import Abilities
from kube2haproxy.plan import Action, Plan


class RecordingApplier:
    def __init__(self, can: Abilities | None = None) -> None:
        self.can = can or Abilities(delete_servers=True)
        self.plans: list[Plan] = []
        self.configs: list[Config] = []

    @property
    def reloads(self) -> int:
        return sum(1 for p in self.plans if p.action is Action.RELOAD)

    @property
    def runtime_updates(self) -> list[Plan]:
        return [p for p in self.plans if p.action is Action.RUNTIME]

    def apply(self, plan: Plan, config: Config) -> ApplyReport:
        self.plans.append(plan)
        self.configs.append(config)
        return ApplyReport(Outcome.RECORDED)

    def observe(self, *, pause: Callable[[], None] = go_on) -> Running | None:
        return None

    def healthy(self) -> bool:
        return True

    def abilities(self) -> Abilities:
        return self.can

    def close(self) -> None:
        pass
