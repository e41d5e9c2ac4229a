"""Which extra features would move our model on the Handbook's protocol: validation only.

    uv run python benchmarks/handbook_features.py [--seed 42] [--sets base,age,windows,customer,all]

On ``FRAUD_SIMULATOR=handbook`` data (``benchmarks/handbook.py``'s, the same seed) our features
(``batch_features``) plus candidate columns computed here, not in ``core.features``: each set is
judged by ``xgboost+none``'s mean average precision over the Handbook's 4 prequential
validation weeks without their known compromised cards (``select_candidate``), as our model
selection judges it; the test week is not looked at. Then, per set of ``--per-scenario``, the
average precision of each fraud scenario alone (the other scenarios' frauds left out) over the
same weeks. The candidates use only what the state at the end of D-1 knows (a fraud of day X
is known on day D >= X + 8, as ``terminal_*_delayed``):

- ``age``: days since the terminal's first and last known fraud within its 30 known days, and
  how many of those days had one (a compromised terminal stays so for 28 days);
- ``windows``: terminal counts and fraud shares over 2, 3, 14 and 21 known days;
- ``customer``: the amount against the customer's mean of the 30 days before its last 7 (not
  yet inflated by a compromise the labels do not show), and against its 7-day and 1-day means.

Prints one JSON line per set.
"""

import argparse
import json
import time

import numpy as np
import polars as pl

import handbook as hb
from fraud_dagster.core.features import FEATURE_COLUMNS
from fraud_dagster.core.metrics import average_precision
from fraud_dagster.core.training import (
    CandidateSettings, assessed_rows, fitted_rows, make_pipeline, select_candidate)

KNOWN_AFTER = 8  # a fraud of day X is in the state of day D >= X + 8
WINDOWS = (2, 3, 14, 21)
SETS = {
    "base": [],
    "age": ["t_first_fraud_age", "t_last_fraud_age", "t_fraud_days"],
    "windows": [f"t_{s}_{w}" for w in WINDOWS for s in ("risk", "n")],
    "customer": ["c_mean_prior", "amount_to_mean_prior", "amount_to_mean_7d", "amount_to_mean_1d"],
}
SETS["age+windows"] = SETS["age"] + SETS["windows"]
SETS["all"] = SETS["age+windows"] + SETS["customer"]


def terminal_candidates(validated: pl.DataFrame, ours: pl.DataFrame) -> dict[str, np.ndarray]:
    first = validated["tx_datetime"].min().date()
    v = validated.select("terminal_id", "tx_fraud",
                         d=(pl.col("tx_datetime").dt.date() - first).dt.total_days())
    n_days, n_terminals = int(v["d"].max()) + 1, int(v["terminal_id"].max()) + 1
    cells = (v["d"].to_numpy() + 1, v["terminal_id"].to_numpy())
    counts, frauds = np.zeros((n_days + 1, n_terminals)), np.zeros((n_days + 1, n_terminals))
    np.add.at(counts, cells, 1)
    np.add.at(frauds, cells, v["tx_fraud"].to_numpy())
    running_n, running_f = counts.cumsum(0), frauds.cumsum(0)
    q = ours.select(D=(pl.col("tx_datetime").dt.date() - first).dt.total_days(), t="terminal_id")
    day, terminal = q["D"].to_numpy(), q["t"].to_numpy()
    end = day - KNOWN_AFTER

    def window(running: np.ndarray, w: int) -> np.ndarray:
        return (running[np.clip(end + 1, 0, n_days), terminal]
                - running[np.clip(end + 1 - w, 0, n_days), terminal])

    out = {}
    for w in WINDOWS:
        n, f = window(running_n, w), window(running_f, w)
        out[f"t_risk_{w}"], out[f"t_n_{w}"] = np.where(n > 0, f / np.maximum(n, 1), 0.0), n
    fraud_day = frauds[1:] > 0
    first_age, last_age, fraud_days = (np.zeros(len(day)) for _ in range(3))
    for age in range(KNOWN_AFTER, KNOWN_AFTER + 30):
        ok = day - age >= 0
        hit = np.zeros(len(day), dtype=bool)
        hit[ok] = fraud_day[(day - age)[ok], terminal[ok]]
        first_age = np.where(hit, age, first_age)
        last_age = np.where(hit & (last_age == 0), age, last_age)
        fraud_days += hit
    out |= {"t_first_fraud_age": first_age, "t_last_fraud_age": last_age, "t_fraud_days": fraud_days}
    return out


def customer_candidates() -> dict[str, pl.Expr]:
    n30, n7 = pl.col("customer_nb_tx_30d"), pl.col("customer_nb_tx_7d")
    before = n30 - n7
    prior = pl.when(before > 0).then((pl.col("customer_mean_amount_30d") * n30
                                      - pl.col("customer_mean_amount_7d") * n7) / before)
    amount = pl.col("tx_amount")

    def ratio(mean: pl.Expr) -> pl.Expr:
        return pl.when(mean > 0).then(amount / mean).otherwise(0.0)

    return {"c_mean_prior": prior.fill_null(0.0), "amount_to_mean_prior": ratio(prior.fill_null(0.0)),
            "amount_to_mean_7d": ratio(pl.col("customer_mean_amount_7d")),
            "amount_to_mean_1d": ratio(pl.col("customer_mean_amount_1d"))}


def per_scenario(frame: pl.DataFrame, columns: list[str], settings: CandidateSettings) -> dict:
    found: dict[int, list] = {}
    for train, valid in hb.PLAN.validation_folds():
        rows = assessed_rows(frame, train, valid, hb.PLAN.delay_days, True)
        fitted = fitted_rows(frame, train, settings)
        y = fitted["tx_fraud"].to_numpy()
        model = make_pipeline("xgboost+none", settings, y).fit(
            fitted.select(columns).to_numpy().astype(np.float64), y)
        scores = model.predict_proba(rows.select(columns).to_numpy().astype(np.float64))[:, 1]
        scenario = rows["tx_fraud_scenario"].to_numpy()
        for k in sorted(set(scenario[scenario > 0])):
            keep = (scenario == 0) | (scenario == k)
            found.setdefault(int(k), []).append(
                (average_precision((scenario[keep] == k).astype(int), scores[keep]),
                 int((scenario == k).sum())))
    return {str(k): {"average_precision": round(float(np.mean([a for a, _ in v])), 4),
                     "frauds": sum(n for _, n in v)} for k, v in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sets", default="base,age,windows,customer,all")
    parser.add_argument("--per-scenario", default="base,all")
    args = parser.parse_args()
    validated = hb.validated_transactions(hb.simulated(args.seed))
    ours = hb.our_frame(validated).join(validated.select("transaction_id", "tx_fraud_scenario"),
                                        on="transaction_id")
    ours = ours.with_columns(**{name: pl.Series(values.astype(np.float64)) for name, values
                                in terminal_candidates(validated, ours).items()})
    ours = ours.with_columns(**customer_candidates())
    settings = CandidateSettings(n_jobs=2)
    for name in args.sets.split(","):
        t0 = time.perf_counter()
        columns = [*FEATURE_COLUMNS, *SETS[name]]
        table, _ = select_candidate(ours, hb.PLAN, ["xgboost+none"], settings, columns=columns,
                                    exclude_known_compromised=True)
        print(json.dumps({"set": name, "seed": args.seed, "columns": len(columns),
                          "validation_average_precision": round(table["mean_average_precision"][0], 4),
                          "folds": [round(table[f"fold_{k}_average_precision"][0], 4)
                                    for k in range(hb.FOLDS)],
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    for name in filter(None, args.per_scenario.split(",")):
        print(json.dumps({"set": name, "seed": args.seed, "per_scenario": per_scenario(
            ours, [*FEATURE_COLUMNS, *SETS[name]], settings)}), flush=True)


if __name__ == "__main__":
    main()
