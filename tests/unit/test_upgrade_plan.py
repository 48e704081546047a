"""Envoy version policy and upgrade batches.

meshwright compiles for the Envoy release lines it is tested with (1.36 to 1.40): a MeshConfig
envoyVersion outside them is a validation error, and an upgrade to one is refused before any
host is touched. An upgrade goes canary first, then site by site in `serial` batches, as Istio's
canary upgrades move a small share of proxies before the rest.
"""

from __future__ import annotations

import pytest

from meshwright.compile.envoy_versions import envoy_version_problem, is_supported
from meshwright.lifecycle.upgrade_plan import UpgradePlanError, batch_size, plan_upgrade
from tests.unit.validation_cases import Case, check_case

EU = ["eu-1", "eu-2", "eu-3", "eu-4", "eu-5"]
US = ["us-1", "us-2", "us-3"]
SITES = [("eu", EU), ("us", US)]


@pytest.mark.parametrize("version", ["1.36.0", "1.37.4", "1.39.3", "1.40.0", "1.40.12"])
def test_supported_versions(version):
    assert is_supported(version)


@pytest.mark.parametrize("version, words", [
    ("1.35.9", "Envoy 1.35.9 is not supported: meshwright compiles for Envoy 1.36.x to 1.40.x"),
    ("1.41.0", "Envoy 1.41.0 is not supported"),
    ("2.0.0", "Envoy 2.0.0 is not supported"),
    ("1.40", "'1.40' is not an Envoy release version such as 1.40.0"),
    ("latest", "not an Envoy release version"),
])
def test_unsupported_versions(version, words):
    assert words in envoy_version_problem(version)


def test_mesh_config_envoy_version_outside_the_supported_range(tmp_path):
    check_case(tmp_path, Case(
        "envoyVersion 1.41.0",
        """
        apiVersion: meshwright.io/v1alpha1
        kind: MeshConfig
        metadata: {name: mesh}
        spec:
          envoyVersion: 1.41.0  #!
        """,
        "MeshConfig/default/mesh", "spec.envoyVersion", ("Envoy 1.41.0 is not supported", "1.36.x to 1.40.x"),
    ))


def names_and_hosts(plan):
    return [(batch.name, list(batch.hosts)) for batch in plan.batches]


def test_canary_first_then_each_site_in_order_in_serial_batches():
    plan = plan_upgrade("1.40.0", SITES, EU + US, {}, canary=1, serial=2)
    assert names_and_hosts(plan) == [
        ("canary", ["eu-1"]), ("eu 1/2", ["eu-2", "eu-3"]), ("eu 2/2", ["eu-4", "eu-5"]), ("us 1/2", ["us-1", "us-2"]), ("us 2/2", ["us-3"]),
    ]


def test_site_order_is_the_order_asked_for_not_the_inventory_order():
    plan = plan_upgrade("1.40.0", list(reversed(SITES)), EU + US, {}, canary=0, serial="100%")
    assert names_and_hosts(plan) == [("us 1/1", US), ("eu 1/1", EU)]


def test_percentages_round_up_canary_of_all_serial_of_the_site():
    plan = plan_upgrade("1.40.0", SITES, EU + US, {}, canary="10%", serial="50%")
    # 10% of 8 proxies -> 1; 50% of the 4 left in eu -> 2; 50% of 3 in us -> 2.
    assert names_and_hosts(plan) == [("canary", ["eu-1"]), ("eu 1/2", ["eu-2", "eu-3"]), ("eu 2/2", ["eu-4", "eu-5"]),
                                     ("us 1/2", ["us-1", "us-2"]), ("us 2/2", ["us-3"])]
    assert batch_size("25%", 20, "x") == 5 and batch_size("1%", 3, "x") == 1 and batch_size("0%", 3, "x") == 0


def test_proxies_on_the_target_already_are_left_out_so_a_rerun_goes_on_where_it_stopped():
    running = {"eu-1": "1.40.0", "eu-2": "1.40.0", "eu-3": "1.39.3"}
    plan = plan_upgrade("1.40.0", SITES, EU + US, running, canary=1, serial=3)
    assert plan.up_to_date == ("eu-1", "eu-2")
    assert names_and_hosts(plan) == [("canary", ["eu-3"]), ("eu 1/1", ["eu-4", "eu-5"]), ("us 1/1", US)]
    assert plan.as_dict()["hosts"] == ["eu-3", "eu-4", "eu-5", *US]


def test_a_host_in_two_sites_goes_with_the_first_and_hosts_outside_the_run_are_ignored():
    plan = plan_upgrade("1.40.0", [("eu", EU), ("all", EU + US)], ["eu-1", "us-1"], {}, canary=0, serial=5)
    assert names_and_hosts(plan) == [("eu 1/1", ["eu-1"]), ("all 1/1", ["us-1"])]


def test_refusals_name_the_problem():
    with pytest.raises(UpgradePlanError, match=r"cannot upgrade to 1\.41\.0: Envoy 1\.41\.0 is not supported: meshwright compiles for Envoy 1\.36\.x to 1\.40\.x"):
        plan_upgrade("1.41.0", SITES, EU, {})
    with pytest.raises(UpgradePlanError, match=r"us-1, us-2, us-3 are in none of the sites eu: add their group to upgrade_sites"):
        plan_upgrade("1.40.0", [("eu", EU)], EU + US, {})
    with pytest.raises(UpgradePlanError, match=r"upgrade_serial 'two' is neither a number of proxies nor a percentage"):
        plan_upgrade("1.40.0", SITES, EU, {}, serial="two")
    with pytest.raises(UpgradePlanError, match=r"upgrade_serial 0 makes empty batches"):
        plan_upgrade("1.40.0", SITES, EU, {}, serial=0)
    with pytest.raises(UpgradePlanError, match=r"upgrade_canary '150%': a percentage is from 0% to 100%"):
        plan_upgrade("1.40.0", SITES, EU, {}, canary="150%")
