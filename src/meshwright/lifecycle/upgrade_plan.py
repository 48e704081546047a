"""The batches of an Envoy upgrade across an estate: a canary first, then site by site in
batches of `serial`. A pure function of the inventory's sites, what each proxy runs now and
the target; playbooks/upgrade.yml runs the batches in order and stops at the first whose
health gate fails.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from meshwright.compile.envoy_versions import envoy_version_problem

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class UpgradePlanError(Exception):
    pass


@dataclass(frozen=True)
class Batch:
    name: str  # "canary", or "<site> 2/5"
    site: str
    hosts: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"name": self.name, "site": self.site, "hosts": list(self.hosts)}


@dataclass(frozen=True)
class UpgradePlan:
    version: str
    batches: tuple[Batch, ...]
    up_to_date: tuple[str, ...] = field(default=())  # hosts that already run the target

    def as_dict(self) -> dict:
        return {"version": self.version, "batches": [b.as_dict() for b in self.batches], "up_to_date": list(self.up_to_date),
                "hosts": [host for batch in self.batches for host in batch.hosts]}


def batch_size(spec, of: int, what: str) -> int:
    """A count (3, "3") or a share ("25%", of `of` hosts, rounded up, at least 1) -> hosts."""
    text = str(spec).strip()
    match = _PERCENT.match(text)
    if match:
        share = float(match.group(1))
        if not 0 <= share <= 100:
            raise UpgradePlanError(f"{what} {spec!r}: a percentage is from 0% to 100%")
        return 0 if share == 0 or of == 0 else max(1, math.ceil(of * share / 100))
    if text.isdigit():
        return int(text)
    raise UpgradePlanError(f"{what} {spec!r} is neither a number of proxies nor a percentage such as 25%")


def plan_upgrade(version: str, sites: list[tuple[str, list[str]]], hosts: list[str], running: dict[str, str | None],
                 canary="1", serial="25%") -> UpgradePlan:
    """sites: (name, hosts in inventory order) in upgrade order; hosts: every proxy host of the
    estate, each of which must be in a site; running: the version each proxy runs now.
    A host in several sites is upgraded with the first. Hosts already on `version` are left out.
    canary: proxies of the first site upgraded alone first (a count or a share of all proxies to
    upgrade; 0 for none); serial: batch size within each site (a count or a share of the site)."""
    problem = envoy_version_problem(version)
    if problem:
        raise UpgradePlanError(f"cannot upgrade to {version}: {problem}")
    if not sites:
        raise UpgradePlanError("upgrade_sites names no site: give the inventory groups to upgrade, in order")
    seen: set[str] = set()
    ordered: list[tuple[str, list[str]]] = []
    for site, members in sites:
        own = [host for host in members if host in hosts and host not in seen]
        seen.update(own)
        ordered.append((site, own))
    outside = [host for host in hosts if host not in seen]
    if outside:
        raise UpgradePlanError(f"{', '.join(outside)} {'is' if len(outside) == 1 else 'are'} in none of the sites "
                               f"{', '.join(site for site, dummy in sites)}: add {'its' if len(outside) == 1 else 'their'} group "
                               "to upgrade_sites, or leave the host out with --limit")
    up_to_date = tuple(host for dummy, members in ordered for host in members if running.get(host) == version)
    todo = [(site, [host for host in members if host not in up_to_date]) for site, members in ordered]
    total = sum(len(members) for dummy, members in todo)
    canary_size = batch_size(canary, total, "upgrade_canary")
    batches: list[Batch] = []
    for site, members in todo:
        if not members:
            continue
        if canary_size and not batches:
            batches.append(Batch("canary", site, tuple(members[:canary_size])))
            members = members[canary_size:]
        size = batch_size(serial, len(members), "upgrade_serial")
        if members and size == 0:
            raise UpgradePlanError(f"upgrade_serial {serial!r} makes empty batches: give at least 1")
        count = math.ceil(len(members) / size) if members else 0
        for index in range(count):
            batches.append(Batch(f"{site} {index + 1}/{count}", site, tuple(members[index * size:(index + 1) * size])))
    return UpgradePlan(version, tuple(batches), up_to_date)
