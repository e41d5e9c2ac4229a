"""Ten times the data: ``FRAUD_SIMULATOR_SCALE`` multiplies the simulator's population and fraud
counts, and the daily assets' backfills are cut into runs of as many rows as one run at scale 1."""

import datetime as dt
import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from fraud_dagster.core.simulator import Simulator, SimulatorConfig
from fraud_dagster.partitions import DAYS_PER_RUN_AT_SCALE_1, backfill_policy_for
from fraud_dagster.resources import SimulatorSource

WEEK = (dt.date(2025, 2, 3), dt.date(2025, 2, 9))


def test_a_scaled_config_multiplies_customers_terminals_and_every_fraud_count():
    base = SimulatorConfig()
    scaled = base.scaled(10)
    assert (scaled.n_customers, scaled.n_terminals) == (50_000, 100_000)
    assert (scaled.n_compromised_terminals, scaled.n_compromised_customers) == (20, 30)
    assert (scaled.n_stolen_cards, scaled.n_tested_cards) == (15.0, 20.0)
    assert (scaled.radius, scaled.seed, scaled.drift_start) == (base.radius, base.seed,
                                                                base.drift_start)
    assert base.scaled(1) == base


@pytest.mark.slow  # simulates a week at ten times the population
def test_at_scale_10_a_day_has_about_100_000_transactions_and_the_same_fraud_rate():
    small = Simulator(SimulatorConfig()).days(*WEEK)
    large = SimulatorSource(scale=10).read_days(*WEEK)
    assert 9.5 < large.height / small.height < 10.5
    assert 95_000 < large.height / 7 < 105_000
    fraud_rate = lambda frame: (frame["tx_fraud_scenario"] > 0).mean()  # noqa: E731 (the truth)
    assert fraud_rate(large) == pytest.approx(fraud_rate(small), rel=0.25)
    assert large["customer_id"].max() >= 45_000 and large["terminal_id"].max() >= 90_000


def test_backfills_are_one_run_at_scale_1_and_runs_of_fewer_days_as_the_scale_grows():
    assert backfill_policy_for(1) == dg.BackfillPolicy.single_run()
    assert backfill_policy_for(10) == dg.BackfillPolicy.multi_run(
        max_partitions_per_run=DAYS_PER_RUN_AT_SCALE_1 // 10)
    assert backfill_policy_for(10).max_partitions_per_run == 18
    assert backfill_policy_for(1_000).max_partitions_per_run == 1


@pytest.mark.slow  # loads the definitions in a new process
def test_fraud_simulator_scale_sets_the_simulator_and_the_daily_assets_backfill_policy():
    """The definitions a code location loads with FRAUD_SIMULATOR_SCALE=10 (a fresh process:
    the policy is read when the modules are imported, like the partitions' dates)."""
    script = """
import json
import dagster as dg
from fraud_dagster.definitions import defs
graph = defs.resolve_asset_graph()
print(json.dumps({
    "scale": defs.resources["transaction_source"].scale,
    "policies": {key.to_user_string(): graph.get(key).backfill_policy.max_partitions_per_run
                 for key in dg.AssetSelection.groups("transactions", "features").resolve(graph)},
}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "FRAUD_SIMULATOR_SCALE": "10"}, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["scale"] == 10
    assert loaded["policies"] == dict.fromkeys(
        ["raw_transactions", "validated_transactions", "quarantined_transactions",
         "fraud_labels", "quarantined_labels", "transaction_features", "feature_state"], 18)
