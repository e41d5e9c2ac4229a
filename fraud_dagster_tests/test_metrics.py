import datetime as dt
import math

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.metrics import average_precision_score

from fraud_dagster.core.metrics import (
    ThresholdObjective,
    average_precision,
    card_precision_at_k,
    card_precision_at_k_per_day,
    choose_threshold,
    cost_at_threshold,
    cost_curve,
    evaluation_metrics,
    per_day_table,
    recall_at_precision,
    roc_auc,
)
from fraud_dagster.core.plots import cost_curve_png, pr_curve_png, roc_curve_png

START = dt.datetime(2025, 1, 1, 12)

# Six transactions ranked by score. Alerting on score >= t gives, t from the top:
#   t    label  alerts  frauds caught  precision  recall
#   0.9  1      1       1              1          1/3
#   0.8  1      2       2              1          2/3
#   0.7  0      3       2              2/3        2/3
#   0.6  1      4       3              3/4        1
#   0.5  0      5       3              3/5        1
#   0.4  0      6       3              1/2        1
Y = np.array([1, 1, 0, 1, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])


def scored(rows: list[tuple[int, int, int, float]]) -> pl.DataFrame:
    """A scored frame from (day number, customer_id, tx_fraud, score) rows."""
    return pl.DataFrame(
        {
            "tx_datetime": [START + dt.timedelta(days=day) for day, *_ in rows],
            "customer_id": [row[1] for row in rows],
            "tx_fraud": [row[2] for row in rows],
            "score": [row[3] for row in rows],
        },
        schema={
            "tx_datetime": pl.Datetime("us"),
            "customer_id": pl.Int64,
            "tx_fraud": pl.Int8,
            "score": pl.Float64,
        },
    )


def random_rows(seed: int, n_days: int = 6, n_rows: int = 400) -> list[tuple[int, int, int, float]]:
    """Days of transactions where a few compromised cards commit frauds over several days."""
    rng = np.random.default_rng(seed)
    days = rng.integers(0, n_days, n_rows)
    customers = rng.integers(0, 40, n_rows)
    frauds = ((customers < 10) & (rng.random(n_rows) < 0.5)).astype(int)
    scores = np.clip(rng.normal(0.3 + 0.3 * frauds, 0.2), 0, 1)
    return list(zip(days.tolist(), customers.tolist(), frauds.tolist(), scores.tolist()))


def handbook_card_precision_per_day(rows: list[tuple[int, int, int, float]], k: int) -> list[float]:
    """The Handbook's card precision top-k, step by step in plain Python."""
    detected: set[int] = set()
    daily = []
    for day in sorted({row[0] for row in rows}):
        cards: dict[int, tuple[float, int]] = {}
        for row_day, customer, fraud, score in rows:
            if row_day == day and customer not in detected:
                best, any_fraud = cards.get(customer, (-math.inf, 0))
                cards[customer] = (max(best, score), max(any_fraud, fraud))
        top = sorted(cards.items(), key=lambda card: -card[1][0])[:k]
        found = {customer for customer, (_, fraud) in top if fraud}
        daily.append(len(found) / k)
        detected |= found
    return daily


def test_average_precision_matches_the_hand_computed_value_and_sklearn():
    # Frauds at ranks 1, 2, 4, each adding 1/3 recall at precision 1, 1, 3/4: AP = (1 + 1 + 3/4) / 3.
    assert average_precision(Y, SCORES) == pytest.approx(11 / 12)
    assert average_precision(Y, SCORES) == pytest.approx(average_precision_score(Y, SCORES))


def test_roc_auc_is_the_share_of_fraud_genuine_pairs_ranked_correctly():
    # Frauds 0.9, 0.8, 0.6 against genuine 0.7, 0.5, 0.4: 3 + 3 + 2 of 9 pairs.
    assert roc_auc(Y, SCORES) == pytest.approx(8 / 9)


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1], []])
def test_ranking_metrics_are_nan_unless_both_classes_occur(labels):
    scores = [0.2, 0.5, 0.9][: len(labels)]
    assert math.isnan(average_precision(labels, scores))
    assert math.isnan(roc_auc(labels, scores))


def test_metrics_reject_scores_that_are_not_finite():
    with pytest.raises(ValueError, match="finite"):
        average_precision([0, 1], [0.1, float("nan")])


def test_card_precision_scores_a_card_by_its_highest_score_and_any_fraud():
    # Card 1: a genuine 0.95 and a fraud 0.05, so max 0.95 and fraudulent. Card 2: 0.9 genuine,
    # card 3: 0.6 fraud. Top-1 card is card 1, compromised: 1/1. (Top transaction, or a card's mean
    # score 0.5, would alert on a genuine one.)
    frame = scored([(0, 1, 0, 0.95), (0, 1, 1, 0.05), (0, 2, 0, 0.9), (0, 3, 1, 0.6)])
    assert card_precision_at_k(frame, k=1) == 1.0


def test_card_precision_removes_cards_detected_on_earlier_days():
    # Day 1: card 1 (0.9, fraud) is the top-1 and detected: 1/1.
    # Day 2: card 1 (0.95, fraud) is dropped, so card 2 (0.8, genuine) is the top-1: 0/1.
    frame = scored([(0, 1, 1, 0.9), (0, 2, 0, 0.5), (1, 1, 1, 0.95), (1, 2, 0, 0.8), (1, 3, 1, 0.3)])
    daily = card_precision_at_k_per_day(frame, k=1)
    assert daily["card_precision_at_k"].to_list() == [1.0, 0.0]
    assert daily["cards"].to_list() == [2, 2]
    assert daily["compromised_cards"].to_list() == [1, 1]
    assert card_precision_at_k(frame, k=1) == 0.5


def test_card_precision_keeps_cards_alerted_as_genuine_or_missed_on_earlier_days():
    # Day 1, k=1: card 2 (0.9, genuine) is alerted, card 1 (0.5, fraud) is missed: 0/1; neither is
    # detected. Day 2: both are still there, card 1 (0.8, fraud) is the top-1: 1/1.
    frame = scored([(0, 1, 1, 0.5), (0, 2, 0, 0.9), (1, 1, 1, 0.8), (1, 2, 1, 0.7)])
    assert card_precision_at_k_per_day(frame, k=1)["card_precision_at_k"].to_list() == [0.0, 1.0]


def test_card_precision_divides_by_k_when_fewer_than_k_cards():
    # Three cards, two compromised, k=5: 2/5, not 2/3.
    frame = scored([(0, 1, 1, 0.9), (0, 1, 0, 0.2), (0, 2, 0, 0.8), (0, 3, 1, 0.1)])
    assert card_precision_at_k(frame, k=5) == pytest.approx(0.4)


def test_card_precision_counts_a_day_whose_cards_were_all_detected_before_as_zero():
    # Card 1 is detected on day 1; day 2 has only card 1, so nothing is left to alert: mean of 1 and 0.
    frame = scored([(0, 1, 1, 0.9), (1, 1, 1, 0.9)])
    daily = card_precision_at_k_per_day(frame, k=1)
    assert daily["cards"].to_list() == [1, 0]
    assert card_precision_at_k(frame, k=1) == 0.5


def test_card_precision_orders_cards_with_equal_scores_by_customer_id():
    # Cards 1 (genuine) and 2 (fraud) both 0.5: card 1 is alerted, whatever the row order.
    rows = [(0, 2, 1, 0.5), (0, 1, 0, 0.5)]
    assert card_precision_at_k(scored(rows), k=1) == 0.0
    assert card_precision_at_k(scored(rows[::-1]), k=1) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_card_precision_matches_the_handbook_procedure_on_random_days(seed):
    rows = random_rows(seed)
    expected = handbook_card_precision_per_day(rows, k=5)
    daily = card_precision_at_k_per_day(scored(rows), k=5)
    assert daily["card_precision_at_k"].to_list() == pytest.approx(expected)
    assert card_precision_at_k(scored(rows), k=5) == pytest.approx(np.mean(expected))


def test_card_precision_is_nan_without_transactions():
    assert math.isnan(card_precision_at_k(scored([]), k=1))


def test_recall_at_precision_takes_the_highest_recall_meeting_the_precision():
    # From the table above: precision >= 0.9 holds down to t=0.8 (recall 2/3); >= 0.75 down to 0.6.
    assert recall_at_precision(Y, SCORES, precision=0.9) == (pytest.approx(2 / 3), 0.8)
    assert recall_at_precision(Y, SCORES, precision=0.75) == (1.0, 0.6)


def test_recall_at_precision_prefers_the_highest_threshold_for_equal_recall():
    # Labels 1, 0, 1, 0 at 0.9 .. 0.6: t=0.7 (precision 2/3) and t=0.6 (1/2) both reach recall 1.
    assert recall_at_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6], precision=0.5) == (1.0, 0.7)


def test_recall_at_precision_is_zero_without_threshold_when_the_precision_is_never_reached():
    # The genuine transaction has the higher score: precision is 0 then 1/2.
    assert recall_at_precision([0, 1], [0.9, 0.1], precision=0.9) == (0.0, None)


def test_recall_at_precision_is_nan_without_frauds():
    recall, threshold = recall_at_precision([0, 0], [0.9, 0.1])
    assert math.isnan(recall) and threshold is None


def test_cost_at_threshold_prices_missed_frauds_and_false_alarms():
    # t=0.7 alerts 0.9, 0.8, 0.7: misses the fraud at 0.6 (1 x 1) and alerts the genuine 0.7 (1 x 2).
    assert cost_at_threshold(Y, SCORES, 0.7, cost_missed_fraud=1.0, cost_false_alarm=2.0) == 3.0
    # Between two scores, the same alerts as at the upper one.
    assert cost_at_threshold(Y, SCORES, 0.65, cost_missed_fraud=1.0, cost_false_alarm=2.0) == 3.0
    # Above every score nothing is alerted: three missed frauds.
    assert cost_at_threshold(Y, SCORES, 0.99, cost_missed_fraud=1.0, cost_false_alarm=2.0) == 3.0


def test_cost_curve_lists_every_distinct_score_with_its_cost():
    # missed x 1 + false alarms x 2, from the table: 0.4: 0+6, 0.5: 0+4, 0.6: 0+2, 0.7: 1+2, 0.8: 1+0,
    # 0.9: 2+0.
    thresholds, costs = cost_curve(Y, SCORES, cost_missed_fraud=1.0, cost_false_alarm=2.0)
    assert thresholds.tolist() == [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert costs.tolist() == [6.0, 4.0, 2.0, 3.0, 1.0, 2.0]


def test_cost_curve_agrees_with_cost_at_threshold_at_every_threshold():
    rng = np.random.default_rng(7)
    y = (rng.random(300) < 0.1).astype(int)
    scores = np.round(np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1), 2)  # rounded: many ties
    thresholds, costs = cost_curve(y, scores, cost_missed_fraud=100.0, cost_false_alarm=2.0)
    assert thresholds.tolist() == sorted(set(scores.tolist()))
    expected = [cost_at_threshold(y, scores, t, 100.0, 2.0) for t in thresholds]
    assert costs.tolist() == expected


def test_choose_threshold_for_cost_takes_the_cheapest_threshold():
    # Costs above with a missed fraud at 1 and a false alarm at 2: cheapest is 1, at t=0.8.
    objective = ThresholdObjective(kind="cost", cost_missed_fraud=1.0, cost_false_alarm=2.0)
    assert choose_threshold(Y, SCORES, objective) == 0.8


def test_choose_threshold_for_cost_prefers_fewer_alerts_on_equal_cost():
    # Both prices 1: 0.9: 2, 0.8: 1, 0.7: 2, 0.6: 1, 0.5: 2, 0.4: 3. t=0.8 and t=0.6 tie; 0.8 alerts less.
    objective = ThresholdObjective(kind="cost", cost_missed_fraud=1.0, cost_false_alarm=1.0)
    assert choose_threshold(Y, SCORES, objective) == 0.8


@pytest.mark.parametrize(("target", "expected"), [(0.9, 0.8), (0.75, 0.6)])
def test_choose_threshold_for_recall_at_precision_takes_that_threshold(target, expected):
    objective = ThresholdObjective(kind="recall_at_precision", target_precision=target)
    assert choose_threshold(Y, SCORES, objective) == expected


def test_choose_threshold_falls_back_to_the_best_precision_when_the_target_is_unreachable():
    # Labels 0, 1, 0, 1 at 0.9 .. 0.6: precision 0, 1/2, 1/3, 1/2. Best 1/2 at 0.8 (recall 1/2) and
    # 0.6 (recall 1): 0.6.
    objective = ThresholdObjective(kind="recall_at_precision", target_precision=0.9)
    assert choose_threshold([0, 1, 0, 1], [0.9, 0.8, 0.7, 0.6], objective) == 0.6


def test_choose_threshold_for_recall_needs_frauds():
    with pytest.raises(ValueError, match="without frauds"):
        choose_threshold([0, 0], [0.1, 0.2], ThresholdObjective(kind="recall_at_precision"))


@pytest.mark.parametrize(
    "fields",
    [{"kind": "f1"}, {"cost_false_alarm": -1.0}, {"target_precision": 0.0}, {"target_precision": 1.5}],
)
def test_threshold_objective_rejects_unknown_kinds_and_impossible_values(fields):
    with pytest.raises(ValueError):
        ThresholdObjective(**fields)


# Three days, alerts at score >= 0.5, a missed fraud costs 10 and a false alarm 1:
#   day 1: card 1 fraud 0.9, card 2 genuine 0.8, card 3 fraud 0.3, card 4 genuine 0.1
#   day 2: card 1 fraud 0.95, card 2 genuine 0.6, card 5 genuine 0.2
#   day 3: card 6 genuine 0.7
WINDOW = scored(
    [
        (0, 1, 1, 0.9),
        (0, 2, 0, 0.8),
        (0, 3, 1, 0.3),
        (0, 4, 0, 0.1),
        (1, 1, 1, 0.95),
        (1, 2, 0, 0.6),
        (1, 5, 0, 0.2),
        (2, 6, 0, 0.7),
    ]
)
WINDOW_OBJECTIVE = ThresholdObjective(cost_missed_fraud=10.0, cost_false_alarm=1.0, target_precision=0.9)


def test_evaluation_metrics_on_a_hand_computed_window():
    # Ranked: F .95, F .9, G .8, G .7, G .6, F .3, G .2, G .1.
    # AP: frauds at ranks 1, 2, 6 with precision 1, 1, 1/2: (1 + 1 + 1/2) / 3 = 5/6.
    # AUC: frauds .95 and .9 beat 5 genuine each, .3 beats 2: 12 / 15.
    # Precision >= 0.9 down to t=0.9: recall 2/3.
    # Card precision top-1: day 1 card 1 (fraud) 1; day 2 card 1 dropped, card 2 (genuine) 0; day 3 0.
    # At 0.5: 5 alerts, 2 caught, 3 false alarms, 1 missed: precision 2/5, recall 2/3, cost 10 + 3.
    metrics = evaluation_metrics(WINDOW, threshold=0.5, objective=WINDOW_OBJECTIVE, k=1)
    assert metrics == {
        "average_precision": pytest.approx(5 / 6),
        "roc_auc": pytest.approx(12 / 15),
        "card_precision_at_1": pytest.approx(1 / 3),
        "recall_at_90_precision": pytest.approx(2 / 3),
        "cost": 13.0,
        "precision": pytest.approx(2 / 5),
        "recall": pytest.approx(2 / 3),
        "alerts": 5,
        "n_transactions": 8,
        "n_frauds": 3,
    }


def test_evaluation_metrics_is_nan_where_precision_and_recall_are_undefined():
    metrics = evaluation_metrics(scored([(0, 1, 0, 0.2), (0, 2, 0, 0.3)]), threshold=0.5, k=1)
    assert math.isnan(metrics["precision"]) and math.isnan(metrics["recall"])
    assert metrics["cost"] == 0.0


def test_per_day_table_on_a_hand_computed_window():
    # Day 1: 2 alerts (.9 F, .8 G), caught 1 of 2 frauds: precision 1/2, recall 1/2, cost 10 + 1;
    #        AP: frauds at ranks 1 and 3: (1 + 2/3) / 2 = 5/6; AUC 3 of 4 pairs; card top-1 is card 1.
    # Day 2: 2 alerts (.95 F, .6 G), caught 1 of 1: precision 1/2, recall 1, cost 1; AP 1, AUC 1;
    #        card 1 was detected on day 1, so the top-1 is card 2, genuine.
    # Day 3: 1 alert, genuine, no fraud: precision 0, recall, AP and AUC undefined, cost 1.
    table = per_day_table(WINDOW, threshold=0.5, objective=WINDOW_OBJECTIVE, k=1)
    expected = pl.DataFrame(
        {
            "day": [dt.date(2025, 1, 1), dt.date(2025, 1, 2), dt.date(2025, 1, 3)],
            "transactions": [4, 3, 1],
            "frauds": [2, 1, 0],
            "alerts": [2, 2, 1],
            "average_precision": [5 / 6, 1.0, None],
            "roc_auc": [3 / 4, 1.0, None],
            "card_precision_at_1": [1.0, 0.0, 0.0],
            "precision": [0.5, 0.5, 0.0],
            "recall": [0.5, 1.0, None],
            "cost": [11.0, 1.0, 1.0],
        }
    )
    assert_frame_equal(table, expected)


def test_per_day_precision_is_null_on_a_day_without_alerts():
    table = per_day_table(scored([(0, 1, 1, 0.2), (0, 2, 0, 0.1)]), threshold=0.5, k=1)
    assert table["precision"].to_list() == [None]
    assert table["recall"].to_list() == [0.0]


def test_per_day_costs_and_counts_add_up_to_the_window():
    frame = scored(random_rows(seed=3))
    objective = ThresholdObjective()
    table = per_day_table(frame, threshold=0.5, objective=objective, k=5)
    window = evaluation_metrics(frame, threshold=0.5, objective=objective, k=5)
    assert table["cost"].sum() == pytest.approx(window["cost"])
    assert table["alerts"].sum() == window["alerts"]
    assert table["transactions"].sum() == window["n_transactions"]
    assert table["card_precision_at_5"].mean() == pytest.approx(window["card_precision_at_5"])


CURVES = {"challenger": (Y, SCORES), "champion": (Y, SCORES[::-1])}


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@pytest.mark.parametrize(
    "draw",
    [
        lambda: pr_curve_png(CURVES, target_precision=0.9),
        lambda: roc_curve_png(CURVES),
        lambda: cost_curve_png(CURVES, thresholds={"challenger": 0.8, "champion": 0.5}),
    ],
    ids=["pr", "roc", "cost"],
)
def test_charts_are_small_png_images_drawn_outside_pyplot(draw):
    png = draw()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png_size(png) == (500, 400)
    assert plt.get_fignums() == []


def test_an_unknown_label_is_refused_not_cast_to_an_arbitrary_integer():
    """A null label (unknown: not reported, not matured) read as NaN: an error, not a guess."""
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        average_precision(np.array([0.0, np.nan, 1.0]), np.array([0.1, 0.5, 0.9]))
