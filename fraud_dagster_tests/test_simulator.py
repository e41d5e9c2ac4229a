import datetime as dt

import numpy as np
import polars as pl
import pytest

from fraud_dagster.core.simulator import Simulator, SimulatorConfig

DAY = dt.date(2025, 2, 10)


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
    assert set(counts) == {0, 1, 2, 3, 4}
    assert all(counts[s] > 100 for s in (1, 2, 3, 4))
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


def test_handbook_mode_has_only_the_three_classic_scenarios():
    days = Simulator(SimulatorConfig.handbook()).days(dt.date(2018, 4, 1), dt.date(2018, 4, 20))
    assert set(days["tx_fraud_scenario"].unique()) <= {0, 1, 2, 3}
    assert 0.001 <= days["tx_fraud"].mean() <= 0.02


def test_drift_shifts_spending_and_raises_stolen_card_fraud(sixty_days):
    drifted = pl.col("tx_datetime").dt.date() >= dt.date(2025, 3, 1)
    before, after = sixty_days.filter(~drifted), sixty_days.filter(drifted)
    genuine = pl.col("tx_fraud") == 0
    ratio = after.filter(genuine)["tx_amount"].mean() / before.filter(genuine)["tx_amount"].mean()
    assert 1.08 < ratio < 1.25

    def stolen_per_day(frame):
        days = frame["tx_datetime"].dt.date().n_unique()
        return frame.filter(pl.col("tx_fraud_scenario") == 4).height / days

    assert stolen_per_day(after) > 1.8 * stolen_per_day(before)
