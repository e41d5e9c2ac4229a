"""Seeded card-transaction simulator, after the Fraud Detection Handbook's design.

Customers and terminals live on a 100x100 grid; a customer only uses terminals within
``radius`` of home and spends around a personal mean. Fraud comes from five scenarios:

1. any amount over ``large_amount_threshold`` (the Handbook's 220);
2. compromised terminals: each day ``n_compromised_terminals`` terminals become compromised for
   ``terminal_compromise_days``; every transaction there is fraud;
3. compromised cards: each day ``n_compromised_customers`` cards are leaked for
   ``customer_compromise_days``; a third of their transactions are fraud with the amount
   multiplied by ``compromised_amount_factor``;
4. stolen cards used away from home at night (ours): each day ``n_stolen_cards`` cards are stolen
   and, for ``stolen_card_days``, the thief makes a few extra purchases between midnight and 6am at
   terminals outside the owner's radius;
5. card testing (ours): each day ``n_tested_cards`` cards on average are tested in one burst each:
   3-8 purchases of 0.50-5.00 a few seconds to minutes apart, then 1-3 of 150-1,000 within the next
   hour, every one at a different terminal anywhere on the grid (about 15 transactions a day).

From ``drift_start`` on, spending shifts by ``drift_amount_factor`` and scenarios 4 and 5 become
``drift_fraud_factor`` times more frequent, so that monitoring has something real to find.

Every random draw for day D is seeded by (seed, purpose, D), so a day's rows are the same whichever
other days were simulated. Nothing here knows about Dagster.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from functools import cached_property

import numpy as np
import polars as pl

SECONDS_PER_DAY = 86_400
TRANSACTION_IDS_PER_DAY = 1_000_000
_EPOCH = dt.date(1970, 1, 1)

# Stream identifiers keep the random draws for different purposes independent. New ones go at the
# end: renumbering would change the draws, hence the rows, of every existing purpose.
(_PROFILES, _DAILY, _TERMINAL_PICK, _CUSTOMER_PICK, _CARD_FRAUD, _STOLEN_PICK, _STOLEN_TX,
 _CARD_TESTING) = range(8)


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    seed: int = 42
    n_customers: int = 5_000
    n_terminals: int = 10_000
    radius: float = 5.0
    large_amount_threshold: float = 220.0
    n_compromised_terminals: int = 2
    terminal_compromise_days: int = 28
    n_compromised_customers: int = 3
    customer_compromise_days: int = 14
    compromised_amount_factor: float = 5.0
    n_stolen_cards: float = 1.5
    stolen_card_days: int = 3
    n_tested_cards: float = 2.0
    drift_start: dt.date | None = None
    drift_amount_factor: float = 1.15
    drift_fraud_factor: float = 2.5

    @classmethod
    def handbook(cls, seed: int = 42) -> SimulatorConfig:
        """The Fraud Detection Handbook's setting: its three scenarios only, no drift."""
        return cls(seed=seed, n_stolen_cards=0.0, n_tested_cards=0.0, drift_start=None)

    def scaled(self, factor: int) -> SimulatorConfig:
        """``factor`` times the customers and terminals on the same grid, so about ``factor``
        times the transactions a day (each terminal sees as many as before), and each fraud
        scenario's daily count with them, so the fraud rate stays what it was."""
        return dataclasses.replace(
            self,
            n_customers=self.n_customers * factor,
            n_terminals=self.n_terminals * factor,
            n_compromised_terminals=self.n_compromised_terminals * factor,
            n_compromised_customers=self.n_compromised_customers * factor,
            n_stolen_cards=self.n_stolen_cards * factor,
            n_tested_cards=self.n_tested_cards * factor,
        )


@dataclasses.dataclass(frozen=True)
class Profiles:
    customer_xy: np.ndarray
    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_tx_per_day: np.ndarray
    terminal_xy: np.ndarray
    # Terminals each customer uses, as CSR: customer c uses terminals[offsets[c]:offsets[c+1]].
    terminal_offsets: np.ndarray
    terminals: np.ndarray


def _rng(config: SimulatorConfig, purpose: int, day: dt.date | None = None) -> np.random.Generator:
    return np.random.default_rng([config.seed, purpose, day.toordinal() if day else 0])


def make_profiles(config: SimulatorConfig) -> Profiles:
    rng = _rng(config, _PROFILES)
    customer_xy = rng.uniform(0, 100, size=(config.n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=config.n_customers)
    std_amount = mean_amount / 2
    mean_tx_per_day = rng.uniform(0, 4, size=config.n_customers)
    terminal_xy = rng.uniform(0, 100, size=(config.n_terminals, 2))

    # Terminals and customers bucketed in square cells of side radius: a terminal within the
    # radius of a customer is in the customer's cell or one of the 8 around it, and the three
    # cells of one column are contiguous in cell order. One distance matrix per cell (its
    # customers by those terminals), not a Python step per customer: the 10x preset's 50,000
    # customers took a minute one by one.
    side = int(np.ceil(100 / config.radius))

    def cells(xy: np.ndarray) -> np.ndarray:
        cell = np.minimum((xy // config.radius).astype(np.int64), side - 1)
        return cell[:, 0] * side + cell[:, 1]

    def bucketed(cell_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(cell_id, kind="stable")
        return order, np.searchsorted(cell_id[order], np.arange(side * side + 1))

    terminal_order, terminal_start = bucketed(cells(terminal_xy))
    customer_order, customer_start = bucketed(cells(customer_xy))
    customers, terminals = [], []
    for cx in range(side):
        for cy in range(side):
            cell = cx * side + cy
            members = customer_order[customer_start[cell]: customer_start[cell + 1]]
            if len(members) == 0:
                continue
            low, high = max(cy - 1, 0), min(cy + 1, side - 1)
            candidates = np.sort(np.concatenate([
                terminal_order[terminal_start[x * side + low]: terminal_start[x * side + high + 1]]
                for x in range(max(cx - 1, 0), min(cx + 1, side - 1) + 1)
            ]))
            dist = np.linalg.norm(
                terminal_xy[candidates][None, :, :] - customer_xy[members][:, None, :], axis=2)
            rows, cols = np.nonzero(dist < config.radius)
            customers.append(members[rows])
            terminals.append(candidates[cols])
    customer_of = np.concatenate(customers) if customers else np.empty(0, dtype=np.int64)
    terminal_of = np.concatenate(terminals) if terminals else np.empty(0, dtype=np.int64)
    by_customer = np.argsort(customer_of, kind="stable")  # each customer's terminals ascending
    counts = np.bincount(customer_of, minlength=config.n_customers).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return Profiles(
        customer_xy=customer_xy,
        mean_amount=mean_amount,
        std_amount=std_amount,
        mean_tx_per_day=mean_tx_per_day,
        terminal_xy=terminal_xy,
        terminal_offsets=offsets,
        terminals=terminal_of[by_customer],
    )


class Simulator:
    """Simulates any day independently of every other day."""

    def __init__(self, config: SimulatorConfig = SimulatorConfig()):
        self.config = config

    @cached_property
    def profiles(self) -> Profiles:
        return make_profiles(self.config)

    def _drifted(self, day: dt.date) -> bool:
        return self.config.drift_start is not None and day >= self.config.drift_start

    def _picks_active_on(
        self, day: dt.date, purpose: int, per_day: int, duration: int, population: int
    ) -> np.ndarray:
        """Ids picked on any of the ``duration`` days ending at ``day`` (each pick lasts that long)."""
        picked = [
            _rng(self.config, purpose, day - dt.timedelta(days=back)).choice(
                population, size=per_day, replace=False
            )
            for back in range(duration)
        ]
        return np.unique(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)

    def _genuine(self, day: dt.date, rng: np.random.Generator) -> dict[str, np.ndarray]:
        p = self.profiles
        n_terminals = np.diff(p.terminal_offsets)
        n_tx = rng.poisson(p.mean_tx_per_day)
        n_tx[n_terminals == 0] = 0
        customer = np.repeat(np.arange(len(n_tx)), n_tx)
        seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, size=len(customer))
        amount = rng.normal(p.mean_amount[customer], p.std_amount[customer])
        negative = amount < 0
        amount[negative] = rng.uniform(0, 2 * p.mean_amount[customer[negative]])
        if self._drifted(day):
            amount *= self.config.drift_amount_factor
        pick = np.floor(rng.random(len(customer)) * n_terminals[customer]).astype(np.int64)
        terminal = p.terminals[p.terminal_offsets[customer] + pick]
        # The Handbook drops times that fall outside the day rather than clipping them.
        inside = (seconds > 0) & (seconds < SECONDS_PER_DAY)
        return {
            "customer": customer[inside],
            "terminal": terminal[inside],
            "seconds": seconds[inside].astype(np.int64),
            "amount": amount[inside],
            "scenario": np.zeros(int(inside.sum()), dtype=np.int8),
        }

    def _stolen_card_purchases(self, day: dt.date) -> dict[str, np.ndarray]:
        c, p = self.config, self.profiles
        rate = c.n_stolen_cards * (c.drift_fraud_factor if self._drifted(day) else 1.0)
        stolen = []
        for back in range(c.stolen_card_days):
            pick_rng = _rng(c, _STOLEN_PICK, day - dt.timedelta(days=back))
            stolen.append(pick_rng.choice(c.n_customers, size=pick_rng.poisson(rate)))
        customer = np.concatenate(stolen).astype(np.int64)
        rng = _rng(c, _STOLEN_TX, day)
        customer = np.repeat(customer, rng.integers(2, 6, size=len(customer)))
        terminal = rng.integers(0, c.n_terminals, size=len(customer))
        far = np.linalg.norm(p.terminal_xy[terminal] - p.customer_xy[customer], axis=1) >= c.radius
        customer, terminal = customer[far], terminal[far]
        return {
            "customer": customer,
            "terminal": terminal,
            "seconds": rng.integers(0, 6 * 3600, size=len(customer)),
            "amount": rng.uniform(20, 200, size=len(customer)),
            "scenario": np.full(len(customer), 4, dtype=np.int8),
        }

    def _card_testing(self, day: dt.date) -> dict[str, np.ndarray]:
        c = self.config
        rate = c.n_tested_cards * (c.drift_fraud_factor if self._drifted(day) else 1.0)
        rng = _rng(c, _CARD_TESTING, day)
        card = rng.choice(c.n_customers, size=rng.poisson(rate))
        n_tests = rng.integers(3, 9, size=len(card))
        n_large = rng.integers(1, 4, size=len(card))
        seconds, amount = [np.empty(0, dtype=np.int64)], [np.empty(0)]
        for tests, large in zip(n_tests, n_large):
            # Tests 20-180 s apart, then the large purchases 5-60 min after the last test; the burst
            # starts anywhere that keeps all of it inside the day.
            offset = np.cumsum(np.concatenate([[0], rng.integers(20, 181, size=tests - 1)]))
            offset = np.concatenate([offset, offset[-1] + rng.integers(300, 3601, size=large)])
            seconds.append(rng.integers(1, SECONDS_PER_DAY - offset.max()) + offset)
            small, big = rng.uniform(0.5, 5.0, tests), rng.uniform(150, 1000, large)
            amount.append(np.concatenate([small, big]))
        n = int((n_tests + n_large).sum())
        return {
            "customer": np.repeat(card, n_tests + n_large),
            # Each at its own terminal anywhere on the grid: testers hop from merchant to merchant.
            "terminal": rng.choice(c.n_terminals, size=n, replace=False),
            "seconds": np.concatenate(seconds),
            "amount": np.concatenate(amount),
            "scenario": np.full(n, 5, dtype=np.int8),
        }

    def day(self, day: dt.date) -> pl.DataFrame:
        """All transactions of one day, labelled, sorted by time."""
        c = self.config
        rng = _rng(c, _DAILY, day)
        parts = [self._genuine(day, rng)]
        if c.n_stolen_cards > 0:
            parts.append(self._stolen_card_purchases(day))
        if c.n_tested_cards > 0:
            # Appended after the other rows, so the per-row draws below keep their values for them.
            parts.append(self._card_testing(day))
        tx = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        scenario = tx["scenario"]
        amount = tx["amount"]

        compromised_terminals = self._picks_active_on(
            day, _TERMINAL_PICK, c.n_compromised_terminals, c.terminal_compromise_days, c.n_terminals
        )
        at_compromised = np.isin(tx["terminal"], compromised_terminals) & (scenario == 0)
        scenario[at_compromised] = 2

        compromised_cards = self._picks_active_on(
            day, _CUSTOMER_PICK, c.n_compromised_customers, c.customer_compromise_days, c.n_customers
        )
        card_rng = _rng(c, _CARD_FRAUD, day)
        leaked = np.isin(tx["customer"], compromised_cards) & (scenario == 0)
        leaked &= card_rng.random(len(leaked)) < 1 / 3
        scenario[leaked] = 3
        amount[leaked] *= c.compromised_amount_factor

        # Scenario 1 is checked last, as in the Handbook, but never overrides another scenario.
        scenario[(amount > c.large_amount_threshold) & (scenario == 0)] = 1

        order = np.lexsort((tx["customer"], tx["seconds"]))
        midnight = np.datetime64(day, "us")
        day_index = (day - _EPOCH).days
        n = len(order)
        return pl.DataFrame(
            {
                "transaction_id": day_index * TRANSACTION_IDS_PER_DAY + np.arange(n, dtype=np.int64),
                "tx_datetime": midnight + tx["seconds"][order].astype("timedelta64[s]"),
                "customer_id": tx["customer"][order].astype(np.int64),
                "terminal_id": tx["terminal"][order].astype(np.int64),
                "tx_amount": np.round(amount[order], 2),
                "tx_fraud": (scenario[order] > 0).astype(np.int8),
                "tx_fraud_scenario": scenario[order],
            }
        ).with_columns(pl.col("tx_datetime").cast(pl.Datetime("us")))

    def days(self, first: dt.date, last: dt.date) -> pl.DataFrame:
        """Every day from ``first`` to ``last`` inclusive, concatenated."""
        n = (last - first).days + 1
        return pl.concat([self.day(first + dt.timedelta(days=i)) for i in range(n)])
