"""The Handbook's protocol: known compromised cards, card precision@k with them removed, the alert
budget threshold, the Handbook's split and features against plain transcriptions of its pandas code."""

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest

from fraud_dagster.core.handbook import (
    HANDBOOK_FEATURES,
    HandbookSplit,
    handbook_features,
    prequential_splits,
    train_test_split,
    validation_split,
)
from fraud_dagster.core.metrics import (
    ThresholdObjective,
    alert_budget_threshold,
    card_precision_at_k,
    card_precision_at_k_per_day,
    choose_threshold,
    known_compromised_cards,
    without_known_compromised,
)
from fraud_dagster.core.training import TrainingPlan, Window, assessed_rows

D0 = dt.date(2025, 3, 1)


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


def frame(rows: list[tuple[int, int, int, float]]) -> pl.DataFrame:
    """(day number, customer_id, tx_fraud, score) rows, at noon, in order."""
    return pl.DataFrame(
        {
            "transaction_id": list(range(len(rows))),
            "tx_datetime": [dt.datetime.combine(day(d), dt.time(12)) for d, *_ in rows],
            "customer_id": [r[1] for r in rows],
            "tx_fraud": [r[2] for r in rows],
            "score": [r[3] for r in rows],
        },
        schema={"transaction_id": pl.Int64, "tx_datetime": pl.Datetime("us"),
                "customer_id": pl.Int64, "tx_fraud": pl.Int8, "score": pl.Float64},
    )


# Known compromised cards ------------------------------------------------------------------------

LABELS = frame([
    (-1, 3, 1, 0.0),  # a fraud before the training window: the Handbook never counts it
    (0, 1, 1, 0.0),   # known from day 0 + 2 + 1 = 3
    (1, 2, 1, 0.0),   # known from day 4
    (1, 4, 0, 0.0),   # genuine: never known
    (3, 5, 1, 0.0),   # known from day 6
    (5, 1, 1, 0.0),   # card 1 again: already known
])


def test_a_fraud_is_known_delay_plus_one_days_later_and_only_from_the_training_start():
    known = known_compromised_cards(LABELS, [day(n) for n in (2, 3, 4, 5, 6)], delay_days=2,
                                    since=day(0))
    assert known == {day(2): frozenset(), day(3): {1}, day(4): {1, 2}, day(5): {1, 2},
                     day(6): {1, 2, 5}}


def test_with_no_delay_a_fraud_is_known_the_next_day():
    known = known_compromised_cards(LABELS, [day(1), day(2)], delay_days=0, since=day(-1))
    assert known == {day(1): {1, 3}, day(2): {1, 2, 3}}


def test_without_known_compromised_drops_a_card_only_on_the_days_it_is_known():
    rows = frame([(3, 1, 0, 0.5), (3, 2, 1, 0.4), (4, 1, 1, 0.3), (4, 2, 0, 0.2), (9, 1, 0, 0.1)])
    kept = without_known_compromised(rows, {day(3): {1}, day(4): {1, 2}})
    assert kept["transaction_id"].to_list() == [1, 4]
    assert without_known_compromised(rows, {}).equals(rows)


# Card precision@k with known cards removed -------------------------------------------------------


def test_card_precision_removes_known_cards_then_cards_detected_on_earlier_days():
    scored = frame([
        # day 0: card 1 (known, fraud) would be top; without it card 2 (fraud) is, then card 3.
        (0, 1, 1, 0.9), (0, 2, 1, 0.8), (0, 3, 0, 0.7),
        # day 1: card 2 was detected on day 0, so card 3 (genuine) is top-1; card 4 (fraud) second.
        (1, 2, 1, 0.95), (1, 3, 0, 0.6), (1, 4, 1, 0.5),
        # day 2: card 4 is known that day; card 5 (fraud) is top.
        (2, 4, 1, 0.99), (2, 5, 1, 0.1),
    ])
    known = {day(0): {1}, day(2): {4}}
    daily = card_precision_at_k_per_day(scored, k=1, known_compromised=known)
    assert daily["known_cards"].to_list() == [1, 0, 1]
    assert daily["cards"].to_list() == [2, 2, 1]
    assert daily["compromised_cards"].to_list() == [1, 1, 1]
    assert daily["card_precision_at_k"].to_list() == [1.0, 0.0, 1.0]
    assert card_precision_at_k(scored, k=1, known_compromised=known) == pytest.approx(2 / 3)
    # Without the known cards: day 0 detects card 1, day 1 card 2 is top again, day 2 card 4.
    assert card_precision_at_k_per_day(scored, k=1)["card_precision_at_k"].to_list() == [1.0, 1.0, 1.0]
    # k = 2: day 0 cards 2, 3 (1 fraud); day 1 cards 3, 4 (1 fraud); day 2 only card 5: 1 / 2.
    assert card_precision_at_k(scored, k=2, known_compromised=known) == pytest.approx(1 / 2)


def test_card_precision_after_removing_known_cards_equals_card_precision_on_the_filtered_rows():
    rng = np.random.default_rng(3)
    n = 600
    scored = frame([(int(d), int(c), int(f), float(s)) for d, c, f, s in zip(
        rng.integers(0, 5, n), rng.integers(0, 60, n), rng.random(n) < 0.1, rng.random(n))])
    known = known_compromised_cards(scored, [day(n) for n in range(5)], 1, day(0))
    assert card_precision_at_k_per_day(scored, 5, known)["card_precision_at_k"].to_list() == \
        card_precision_at_k_per_day(without_known_compromised(scored, known), 5)[
            "card_precision_at_k"].to_list()


# The alert budget --------------------------------------------------------------------------------


def test_alert_budget_counts_cards_not_transactions():
    # One day: card 1 scores .9 and .85, card 2 .8. One card a day: above card 2's .8, so .85
    # (card 1 flagged through both transactions). Counting transactions would give .9.
    assert alert_budget_threshold([0.9, 0.85, 0.8], ["a"] * 3, [1, 1, 2], 1) == 0.85


def test_alert_budget_holds_on_the_busiest_day():
    scores = [0.9, 0.8, 0.7, 0.6, 0.95, 0.5]
    days = ["a", "a", "a", "b", "b", "b"]
    cards = [1, 2, 3, 4, 5, 5]
    # Two a day: day a's third card .7 must not be flagged: .8; day b has two cards only.
    assert alert_budget_threshold(scores, days, cards, 2) == 0.8
    # One a day: above .8 on day a, above .6 on day b: .9.
    assert alert_budget_threshold(scores, days, cards, 1) == 0.9
    # Three a day: no day has more, everything is flagged.
    assert alert_budget_threshold(scores, days, cards, 3) == 0.5


def test_alert_budget_flags_nothing_when_ties_leave_no_threshold():
    threshold = alert_budget_threshold([0.9, 0.9], ["a", "a"], [1, 2], 1)
    assert threshold > 0.9 and threshold == np.nextafter(0.9, 1)


def test_choose_threshold_for_an_alert_budget_needs_days_and_cards():
    objective = ThresholdObjective(kind="alert_budget", daily_cards=1)
    y, scores = [1, 0, 0], [0.9, 0.85, 0.8]
    assert choose_threshold(y, scores, objective, days=["a"] * 3, cards=[1, 1, 2]) == 0.85
    with pytest.raises(ValueError, match="days and cards"):
        choose_threshold(y, scores, objective)
    with pytest.raises(ValueError):
        ThresholdObjective(kind="alert_budget", daily_cards=0)


# The Handbook's split, against its get_train_test_set -------------------------------------------


def handbook_get_train_test_set(df: pd.DataFrame, start: dt.datetime, delta_train: int,
                                delta_delay: int, delta_test: int) -> tuple[list, list]:
    """``get_train_test_set`` of the Handbook's shared functions, transcribed (ids returned)."""
    train_df = df[(df.TX_DATETIME >= start) & (df.TX_DATETIME < start + dt.timedelta(days=delta_train))]
    known = set(train_df[train_df.TX_FRAUD == 1].CUSTOMER_ID)
    start_days = train_df.TX_TIME_DAYS.min()
    test = []
    for d in range(delta_test):
        test_day = df[df.TX_TIME_DAYS == start_days + delta_train + delta_delay + d]
        delay_day = df[df.TX_TIME_DAYS == start_days + delta_train + d - 1]
        known = known.union(set(delay_day[delay_day.TX_FRAUD == 1].CUSTOMER_ID))
        test.append(test_day[~test_day.CUSTOMER_ID.isin(known)])
    return sorted(train_df.TRANSACTION_ID), sorted(pd.concat(test).TRANSACTION_ID)


def random_transactions(seed: int, n_days: int = 40, n: int = 6000) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, n_days * 86_400, n))
    return pl.DataFrame({
        "transaction_id": np.arange(n),
        "tx_datetime": [dt.datetime.combine(D0, dt.time()) + dt.timedelta(seconds=int(s))
                        for s in seconds],
        "customer_id": rng.integers(0, 150, n),
        "terminal_id": rng.integers(0, 80, n),
        "tx_amount": np.round(rng.gamma(2.0, 30.0, n), 2),
        "tx_fraud": (rng.random(n) < 0.05).astype(np.int8),
    }).with_columns(pl.col("tx_datetime").cast(pl.Datetime("us")))


@pytest.mark.parametrize("seed", [0, 1])
def test_train_test_split_is_the_handbooks_get_train_test_set(seed):
    transactions = random_transactions(seed)
    pdf = transactions.to_pandas().rename(columns=str.upper)
    pdf["TX_TIME_DAYS"] = (pdf.TX_DATETIME - pd.Timestamp(D0)).dt.days
    for start, (train_days, delay, test_days) in [(day(10), (7, 7, 7)), (day(3), (5, 2, 9))]:
        split = HandbookSplit(start, train_days, delay, test_days)
        train, test = train_test_split(transactions, split)
        expected = handbook_get_train_test_set(pdf, dt.datetime.combine(start, dt.time()),
                                               train_days, delay, test_days)
        assert (sorted(train["transaction_id"]), sorted(test["transaction_id"])) == expected
        assert test.height < len(pd.concat([pdf[pdf.TX_TIME_DAYS == (start - D0).days + train_days
                                                + delay + d] for d in range(test_days)]))


def test_prequential_folds_are_the_project_plans_validation_folds():
    test_split = HandbookSplit(dt.date(2018, 7, 25))
    plan = TrainingPlan(training_end=dt.date(2018, 7, 31))
    folds = prequential_splits(validation_split(test_split), 4)
    assert validation_split(test_split).start_training == dt.date(2018, 7, 11)
    assert [(f.train_days_list()[0], f.training_end, f.test_days_list()[0], f.test_days_list()[-1])
            for f in folds] == [(t.first, t.last, v.first, v.last) for t, v in plan.validation_folds()]
    assert (plan.test_window().first, plan.test_window().last) == (
        test_split.test_days_list()[0], test_split.test_days_list()[-1])


def test_assessed_rows_of_a_fold_are_the_handbooks_test_set_of_that_fold():
    transactions = random_transactions(4)
    split = HandbookSplit(day(10))
    _, test = train_test_split(transactions, split)
    train, assessed = Window(day(10), day(16)), Window(day(24), day(30))
    rows = assessed_rows(transactions, train, assessed, 7, exclude_known_compromised=True)
    assert rows["transaction_id"].to_list() == test["transaction_id"].to_list()
    everything = assessed_rows(transactions, train, assessed, 7, exclude_known_compromised=False)
    assert everything.height > rows.height


# The Handbook's features, against its pandas functions ------------------------------------------


def handbook_pandas_features(df: pd.DataFrame, delay: int = 7) -> pd.DataFrame:
    """Chapter 3's ``is_weekend``, ``is_night``, ``get_customer_spending_behaviour_features`` and
    ``get_count_risk_rolling_window``, transcribed."""
    df = df.copy()
    df["TX_DURING_WEEKEND"] = (df.TX_DATETIME.dt.weekday >= 5).astype(float)
    df["TX_DURING_NIGHT"] = (df.TX_DATETIME.dt.hour <= 6).astype(float)
    out = []
    for _, customer in df.groupby("CUSTOMER_ID"):
        customer = customer.sort_values("TX_DATETIME").set_index("TX_DATETIME", drop=False)
        for w in (1, 7, 30):
            total = customer.TX_AMOUNT.rolling(f"{w}d").sum()
            n = customer.TX_AMOUNT.rolling(f"{w}d").count()
            customer[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = list(n)
            customer[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = list(total / n)
        out.append(customer.reset_index(drop=True))
    df = pd.concat(out)
    out = []
    for _, terminal in df.groupby("TERMINAL_ID"):
        terminal = terminal.sort_values("TX_DATETIME").set_index("TX_DATETIME", drop=False)
        frauds_delay = terminal.TX_FRAUD.rolling(f"{delay}d").sum()
        n_delay = terminal.TX_FRAUD.rolling(f"{delay}d").count()
        for w in (1, 7, 30):
            frauds = terminal.TX_FRAUD.rolling(f"{delay + w}d").sum() - frauds_delay
            n = terminal.TX_FRAUD.rolling(f"{delay + w}d").count() - n_delay
            terminal[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = list(n)
            terminal[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = list(frauds / n)
        out.append(terminal.reset_index(drop=True).fillna(0))
    return pd.concat(out).sort_values("TRANSACTION_ID").reset_index(drop=True)


def test_handbook_features_match_the_handbooks_pandas_functions():
    transactions = random_transactions(5)
    pdf = transactions.to_pandas().rename(columns=str.upper)
    pdf["TX_FRAUD"] = pdf.TX_FRAUD.astype(float)
    expected = handbook_pandas_features(pdf)[list(HANDBOOK_FEATURES)].to_numpy()
    got = handbook_features(transactions)
    assert got["transaction_id"].to_list() == transactions["transaction_id"].to_list()
    np.testing.assert_allclose(got.select(HANDBOOK_FEATURES).to_numpy(), expected, rtol=1e-9,
                               atol=1e-9)
    # Not vacuous: terminals have known frauds and customers several transactions a window.
    assert got["TERMINAL_ID_RISK_7DAY_WINDOW"].max() > 0
    assert got["CUSTOMER_ID_NB_TX_7DAY_WINDOW"].max() > 1


# Training on the Handbook's protocol ------------------------------------------------------------


def synthetic_labelled(plan: TrainingPlan, seed: int = 0, per_day: int = 120) -> pl.DataFrame:
    """Rows with every feature column for the plan's days; fraud follows tx_amount."""
    from fraud_dagster.core.features import FEATURE_COLUMNS

    rng = np.random.default_rng(seed)
    days = Window(plan.labelled_window().first, plan.test_window().last).days()
    n = per_day * len(days)
    features = {name: rng.normal(size=n) for name in FEATURE_COLUMNS}
    features["customer_frauds_known_30d"] = (rng.random(n) < 0.1).astype(float)
    fraud = features["tx_amount"] + rng.normal(scale=0.5, size=n) > 1.5
    return pl.DataFrame({
        "transaction_id": np.arange(n),
        "tx_datetime": [dt.datetime.combine(d, dt.time(12)) for d in days for _ in range(per_day)],
        "customer_id": rng.integers(0, 40, n),
        **features,
        "tx_fraud": fraud.astype(np.int8),
    }).with_columns(pl.col("tx_datetime").cast(pl.Datetime("us")))


def test_training_with_an_alert_budget_flags_at_most_k_cards_on_every_validation_day():
    from fraud_dagster.core.training import CandidateSettings, select_candidate, train

    plan = TrainingPlan(training_end=day(20), train_days=3, delay_days=2, test_days=3, folds=2)
    labelled = synthetic_labelled(plan)
    objective = ThresholdObjective(kind="alert_budget", daily_cards=4)
    settings = CandidateSettings(n_jobs=1)
    model = train(labelled, plan, ["logistic_regression+none"], objective, settings,
                  exclude_known_compromised=True)
    _, pooled = select_candidate(labelled, plan, ["logistic_regression+none"], settings,
                                 exclude_known_compromised=True)
    y, scores, days, cards = pooled["logistic_regression+none"]
    assert model.threshold == alert_budget_threshold(scores, days, cards, 4)
    flagged = pl.DataFrame({"day": days, "card": cards, "score": scores}).filter(
        pl.col("score") >= model.threshold).group_by("day").agg(pl.col("card").n_unique())
    assert flagged["card"].max() <= 4
    # The budget binds: one step lower and some day flags more than 4 cards.
    lower = np.max(scores[scores < model.threshold])
    flagged_lower = pl.DataFrame({"day": days, "card": cards, "score": scores}).filter(
        pl.col("score") >= lower).group_by("day").agg(pl.col("card").n_unique())
    assert flagged_lower["card"].max() > 4


def test_fitting_without_known_fraud_cards_leaves_out_only_those_rows():
    from fraud_dagster.core.training import CandidateSettings, fitted_rows

    plan = TrainingPlan(training_end=day(20), train_days=3, delay_days=2, test_days=3, folds=2)
    labelled = synthetic_labelled(plan)
    window = plan.train_window()
    everything = fitted_rows(labelled, window, CandidateSettings())
    kept = fitted_rows(labelled, window, CandidateSettings(fit_without_known_fraud_cards=True))
    assert everything.height == 3 * 120
    assert kept["transaction_id"].to_list() == everything.filter(
        pl.col("customer_frauds_known_30d") == 0)["transaction_id"].to_list()
    assert 0 < kept.height < everything.height
