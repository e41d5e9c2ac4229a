import dataclasses
import datetime as dt
import hashlib

import numpy as np
import polars as pl
import pytest

from fraud_dagster.core.simulator import SECONDS_PER_DAY, Simulator, SimulatorConfig
from fraud_dagster.resources import SimulatorSource

DAY = dt.date(2025, 2, 10)


def _seconds_of_day(frame: pl.DataFrame) -> pl.Series:
    return (frame["tx_datetime"] - frame["tx_datetime"].dt.truncate("1d")).dt.total_seconds()


@pytest.fixture(scope="module")
def sixty_days() -> pl.DataFrame:
    return Simulator(SimulatorConfig(drift_start=dt.date(2025, 3, 1))).days(
        dt.date(2025, 1, 1), dt.date(2025, 3, 31)
    )


def test_a_day_is_the_same_whichever_other_days_were_simulated():
    alone = Simulator().day(DAY)
    after_others = Simulator()
    after_others.days(DAY - dt.timedelta(days=5), DAY - dt.timedelta(days=1))
    assert after_others.day(DAY).equals(alone)


def test_seed_and_day_change_the_rows():
    base = Simulator().day(DAY)
    assert not Simulator(SimulatorConfig(seed=7)).day(DAY).equals(base)
    assert not Simulator().day(DAY + dt.timedelta(days=1)).equals(base)


def test_a_day_has_about_ten_thousand_transactions_inside_the_day():
    day = Simulator().day(DAY)
    assert 8_000 < day.height < 12_000
    assert (day["tx_datetime"].dt.date() == DAY).all()
    assert day["tx_datetime"].is_sorted()


def test_transaction_ids_are_unique_across_days(sixty_days):
    assert sixty_days["transaction_id"].n_unique() == sixty_days.height


def test_fraud_rate_is_realistic_every_day(sixty_days):
    daily = sixty_days.group_by(pl.col("tx_datetime").dt.date()).agg(pl.col("tx_fraud").mean())
    assert daily["tx_fraud"].min() >= 0.001
    assert daily["tx_fraud"].max() <= 0.03
    assert 0.001 <= sixty_days["tx_fraud"].mean() <= 0.02


def test_every_scenario_occurs_and_labels_agree(sixty_days):
    counts = dict(sixty_days.group_by("tx_fraud_scenario").len().iter_rows())
    assert set(counts) == {0, 1, 2, 3, 4, 5}
    assert all(counts[s] > 100 for s in (1, 2, 3, 4, 5))
    assert ((sixty_days["tx_fraud_scenario"] > 0) == (sixty_days["tx_fraud"] == 1)).all()


def test_large_amounts_are_fraud(sixty_days):
    assert (sixty_days.filter(pl.col("tx_amount") > 220)["tx_fraud"] == 1).all()


def test_stolen_card_purchases_happen_at_night_away_from_home():
    simulator = Simulator()
    day = simulator.day(DAY)
    stolen = day.filter(pl.col("tx_fraud_scenario") == 4)
    assert stolen.height > 0
    assert (stolen["tx_datetime"].dt.hour() < 6).all()
    p = simulator.profiles
    distance = np.linalg.norm(
        p.terminal_xy[stolen["terminal_id"].to_numpy()] - p.customer_xy[stolen["customer_id"].to_numpy()],
        axis=1,
    )
    assert (distance >= simulator.config.radius).all()


def test_card_testing_is_small_amounts_at_different_terminals_within_minutes_then_large_ones(
    sixty_days,
):
    card_testing = sixty_days.filter(pl.col("tx_fraud_scenario") == 5)
    bursts = (
        card_testing.with_columns(seconds=_seconds_of_day(card_testing))
        .group_by(pl.col("tx_datetime").dt.date(), "customer_id")
        .agg("tx_amount", "seconds", "terminal_id")
    )
    assert bursts.height > 100
    for amounts, seconds, terminals in bursts.select("tx_amount", "seconds", "terminal_id").iter_rows():
        n_tests = sum(amount <= 5 for amount in amounts)
        assert 3 <= n_tests <= 8 and 1 <= len(amounts) - n_tests <= 3
        assert all(0.5 <= amount <= 5 for amount in amounts[:n_tests])
        assert all(150 <= amount <= 1000 for amount in amounts[n_tests:])
        assert all(20 <= gap <= 180 for gap in np.diff(seconds[:n_tests]))
        assert all(300 <= t - seconds[n_tests - 1] <= 3600 for t in seconds[n_tests:])
        assert len(set(terminals)) == len(terminals)
    # Anywhere on the grid: the terminals a customer uses cover well under 1 % of it.
    simulator = Simulator()
    p = simulator.profiles
    distance = np.linalg.norm(
        p.terminal_xy[card_testing["terminal_id"].to_numpy()]
        - p.customer_xy[card_testing["customer_id"].to_numpy()],
        axis=1,
    )
    assert (distance >= simulator.config.radius).mean() > 0.95
    # Scenario 1 (over 220) does not take the large purchases.
    assert (card_testing["tx_amount"] > 220).sum() > 100


def test_card_testing_bursts_stay_inside_their_day():
    simulator = Simulator(SimulatorConfig(n_tested_cards=300.0))
    seconds = []
    for day in (DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)):
        card_testing = simulator.day(day).filter(pl.col("tx_fraud_scenario") == 5)
        assert (card_testing["tx_datetime"].dt.date() == day).all()
        seconds.append(_seconds_of_day(card_testing))
    seconds = pl.concat(seconds)
    assert ((seconds > 0) & (seconds < SECONDS_PER_DAY)).all()
    # Bursts start anywhere they fit: some begin in the first and some end in the last half hour.
    assert seconds.min() < 1800 and seconds.max() > SECONDS_PER_DAY - 1800


def test_card_testing_leaves_every_other_row_as_it_was():
    for day in (DAY, dt.date(2025, 3, 10)):
        config = SimulatorConfig(drift_start=dt.date(2025, 3, 1))
        with_testing = Simulator(config).day(day)
        without = Simulator(dataclasses.replace(config, n_tested_cards=0.0)).day(day)
        assert with_testing.height > without.height
        others = with_testing.filter(pl.col("tx_fraud_scenario") != 5).drop("transaction_id")
        assert others.equals(without.drop("transaction_id"))


def test_the_handbook_setting_has_no_card_testing_and_is_unchanged():
    days = Simulator(SimulatorConfig.handbook()).days(dt.date(2018, 4, 1), dt.date(2018, 4, 20))
    assert (days["tx_fraud_scenario"] != 5).all()
    # The rows made by the simulator before card testing existed (commit ed4628e), to the bit.
    checksum = hashlib.sha256(b"".join(days[c].to_numpy().tobytes() for c in days.columns))
    assert days.height == 194_794
    assert checksum.hexdigest() == "70c1ca8ef3c0549d6425cdce657b2ae3553bde4ee5393b57f92a560e5709f84f"
    # FRAUD_SIMULATOR=handbook goes through the resource.
    assert SimulatorSource.handbook().simulator_config() == SimulatorConfig.handbook()


def test_handbook_mode_has_only_the_three_classic_scenarios():
    days = Simulator(SimulatorConfig.handbook()).days(dt.date(2018, 4, 1), dt.date(2018, 4, 20))
    assert set(days["tx_fraud_scenario"].unique()) <= {0, 1, 2, 3}
    assert 0.001 <= days["tx_fraud"].mean() <= 0.02


def test_drift_shifts_spending_and_raises_stolen_card_and_card_testing_fraud(sixty_days):
    drifted = pl.col("tx_datetime").dt.date() >= dt.date(2025, 3, 1)
    before, after = sixty_days.filter(~drifted), sixty_days.filter(drifted)
    genuine = pl.col("tx_fraud") == 0
    ratio = after.filter(genuine)["tx_amount"].mean() / before.filter(genuine)["tx_amount"].mean()
    assert 1.08 < ratio < 1.25

    def per_day(frame, scenario):
        days = frame["tx_datetime"].dt.date().n_unique()
        return frame.filter(pl.col("tx_fraud_scenario") == scenario).height / days

    assert per_day(after, 4) > 1.8 * per_day(before, 4)
    assert per_day(after, 5) > 1.8 * per_day(before, 5)
