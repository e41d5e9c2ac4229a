"""The online feature store on Redis: several BentoML workers or replicas share one state.

Keys (under ``fraud:``): ``state`` names the served state's day S; ``c:S`` / ``t:S`` hash each
customer's and terminal's state row, ``se:S`` each customer's transactions of day S; a day d
after S keeps the transactions applied for it in ``e:d`` (per customer) and their ids in
``ids:d``. Values are packed little-endian int64s (ids, microseconds, cents), so nothing is lost
to Lua's doubles. Each request is one Lua script, atomic on the server: it refuses (nothing
applied) or applies every transaction and returns what their features need, so two workers never
both apply one id, and the customer's next transaction, whichever worker scores it, sees it.
A newer state is written beside the served one and swapped in by one script that also drops the
days it covers. Redis' own persistence (RDB/AOF) keeps the state across Redis restarts; the
service's prediction log replays the rest.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid

import numpy as np
import polars as pl
import redis

from fraud_dagster.core.features import (
    CUSTOMER_STATE,
    EVENT_COLUMNS,
    TERMINAL_STATE,
    amount_cents,
    features_for_day,
    microseconds,
    online_features,
)
from fraud_dagster.core.schema import REQUIRED_COLUMNS
from fraud_dagster.serving.store import (
    FeatureStore,
    Refused,
    Features,
    StoreInfo,
    as_events,
    refusal_of,
    state_day,
    state_rows,
)

PREFIX = "fraud:"
_NULL = np.iinfo(np.int64).min  # c_last_tx when the customer has none
_CUSTOMER = struct.Struct(f"<{len(CUSTOMER_STATE)}q")
_TERMINAL = struct.Struct(f"<{len(TERMINAL_STATE)}q")
_EVENT = struct.Struct("<4q")  # transaction id, microseconds, cents, terminal id
_EPOCH = dt.datetime(1970, 1, 1)

# ARGV: prefix, mode ("score", "check", "replay"), the newest transaction's microseconds, then
# per transaction: id, day, day before, customer, terminal, packed event. Returns {status, state
# day, ...}. Applying also keeps ``newest`` the largest microseconds applied.
_SCORE = """
local p, mode = ARGV[1], ARGV[2]
local state = redis.call('GET', p .. 'state')
local rows = (#ARGV - 3) / 6
local refused, seen, keep = {}, {}, {}
for i = 0, rows - 1 do
  local b = 4 + i * 6
  local id, day = ARGV[b], ARGV[b + 1]
  if state and day <= state then
    refused[#refused + 1] = {i, 'stale'}
  elseif seen[id] then
    refused[#refused + 1] = {i, 'repeated'}
  elseif redis.call('SISMEMBER', p .. 'ids:' .. day, id) == 1 then
    refused[#refused + 1] = {i, 'applied'}
  else
    keep[#keep + 1] = b
  end
  seen[id] = true
end
if mode == 'check' or (mode == 'score' and #refused > 0) then
  return {'refused', state or '', refused}
end
-- Each customer's events of a day are read and written once, however many it has here (the
-- writes touch distinct fields: their order does not matter).
local events = {}
for _, b in ipairs(keep) do
  local id, day, customer, event = ARGV[b], ARGV[b + 1], ARGV[b + 3], ARGV[b + 5]
  redis.call('SADD', p .. 'ids:' .. day, id)
  local key = p .. 'e:' .. day
  if not events[key] then
    redis.call('ZADD', p .. 'days', 0, day)
    events[key] = {}
  end
  local parts = events[key][customer]
  if not parts then
    parts = {redis.call('HGET', key, customer) or ''}
    events[key][customer] = parts
  end
  parts[#parts + 1] = event
end
for key, customers in pairs(events) do
  for customer, parts in pairs(customers) do
    redis.call('HSET', key, customer, table.concat(parts))
  end
end
if tonumber(ARGV[3]) > tonumber(redis.call('GET', p .. 'newest') or '-1') then
  redis.call('SET', p .. 'newest', ARGV[3])
end
if mode == 'replay' then
  return {'applied', state or '', #keep}
end
local out = {}
for i = 0, rows - 1 do
  local b = 4 + i * 6
  local day, before, customer, terminal = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local earlier
  if before == state then
    earlier = redis.call('HGET', p .. 'se:' .. state, customer)
  else
    earlier = redis.call('HGET', p .. 'e:' .. before, customer)
  end
  out[#out + 1] = state and redis.call('HGET', p .. 'c:' .. state, customer) or false
  out[#out + 1] = state and redis.call('HGET', p .. 't:' .. state, terminal) or false
  out[#out + 1] = earlier or ''
  out[#out + 1] = redis.call('HGET', p .. 'e:' .. day, customer) or ''
end
return {'applied', state or '', out}
"""

# ARGV: prefix, new day, staging suffix. Swaps the staged state in if it is newer.
_SWAP = """
local p, day, staged = ARGV[1], ARGV[2], ARGV[3]
local state = redis.call('GET', p .. 'state')
if state and day <= state then
  for _, k in ipairs({'c:', 't:', 'se:'}) do redis.call('DEL', p .. k .. staged) end
  return 0
end
for _, k in ipairs({'c:', 't:', 'se:'}) do
  if redis.call('EXISTS', p .. k .. staged) == 1 then
    redis.call('RENAME', p .. k .. staged, p .. k .. day)
  end
  if state then redis.call('DEL', p .. k .. state) end
end
for _, d in ipairs(redis.call('ZRANGEBYLEX', p .. 'days', '-', '[' .. day)) do
  redis.call('DEL', p .. 'e:' .. d, p .. 'ids:' .. d)
  redis.call('ZREM', p .. 'days', d)
end
redis.call('SET', p .. 'state', day)
return 1
"""

# ARGV: prefix. The state's day, the newest transaction applied, and how many since the state.
_INFO = """
local p = ARGV[1]
local state = redis.call('GET', p .. 'state') or ''
local applied = 0
for _, d in ipairs(redis.call('ZRANGEBYLEX', p .. 'days', '(' .. state, '+')) do
  applied = applied + redis.call('SCARD', p .. 'ids:' .. d)
end
return {state, redis.call('GET', p .. 'newest') or '', applied}
"""

def _micros(column: pl.Series) -> np.ndarray:
    return column.dt.epoch("us").to_numpy()


_PLAIN_ROWS = 256
"""Up to this many transactions, ``_script_args`` builds them in plain Python: for a few rows,
polars expressions cost more than the round trip to Redis."""


def _newest_micros(transactions: pl.DataFrame) -> int:
    if transactions.height <= _PLAIN_ROWS:
        return max(microseconds(when) for when in transactions.get_column("tx_datetime"))
    return int(_micros(transactions["tx_datetime"]).max())


def _script_args(transactions: pl.DataFrame) -> list:
    """Per transaction: id, day, the day before, customer, terminal, its packed event."""
    if transactions.height <= _PLAIN_ROWS:
        if transactions.columns != list(REQUIRED_COLUMNS):
            transactions = transactions.select(REQUIRED_COLUMNS)
        args = []
        for transaction_id, when, customer, terminal, amount in transactions.rows():
            day = when.date()
            args += [transaction_id, day.isoformat(), (day - dt.timedelta(days=1)).isoformat(),
                     customer, terminal,
                     _EVENT.pack(transaction_id, microseconds(when), amount_cents(amount),
                                 terminal)]
        return args
    events = as_events(transactions)
    days = events.get_column("tx_datetime").dt.date()
    before = (days - dt.timedelta(days=1)).cast(pl.String).to_list()
    packed = np.stack([events["transaction_id"].to_numpy(), _micros(events["tx_datetime"]),
                       events["tx_cents"].to_numpy(), events["terminal_id"].to_numpy()],
                      axis=1).astype("<i8")
    args = []
    for i, (transaction_id, day, customer, terminal) in enumerate(zip(
            events["transaction_id"].to_list(), days.cast(pl.String).to_list(),
            events["customer_id"].to_list(), events["terminal_id"].to_list())):
        args += [transaction_id, day, before[i], customer, terminal, packed[i].tobytes()]
    return args


class RedisStore(FeatureStore):
    """The store in Redis at ``url``, shared by every worker that points at it."""

    backend = "redis"

    def __init__(self, url: str, prefix: str = PREFIX):
        self.redis = redis.Redis.from_url(url)
        self.prefix = prefix
        self._score = self.redis.register_script(_SCORE)
        self._swap = self.redis.register_script(_SWAP)
        self._info = self.redis.register_script(_INFO)
        self.redis.ping()

    @property
    def state_date(self) -> dt.date | None:
        day = self.redis.get(self.prefix + "state")
        return dt.date.fromisoformat(day.decode()) if day else None

    def load_state(self, state: pl.DataFrame) -> bool:
        day = state_day(state)
        served = self.state_date
        if served is not None and day <= served:
            return False
        customers, terminals, events = state_rows(state)
        staged = f"staged-{uuid.uuid4().hex}"
        pipe = self.redis.pipeline(transaction=False)
        for key, rows, packer in (("c:", customers, _CUSTOMER), ("t:", terminals, _TERMINAL)):
            mapping = {k: packer.pack(*(_NULL if v is None else v for v in values))
                       for k, values in rows.items()}
            for chunk in range(0, len(mapping), 10_000):
                part = dict(list(mapping.items())[chunk:chunk + 10_000])
                pipe.hset(self.prefix + key + staged, mapping=part)
        per_customer: dict[int, list[bytes]] = {}
        for transaction_id, when, customer, terminal, cents in events.with_columns(
                pl.col("tx_datetime").dt.epoch("us")).iter_rows():
            per_customer.setdefault(customer, []).append(
                _EVENT.pack(transaction_id, when, cents, terminal))
        if per_customer:
            pipe.hset(self.prefix + "se:" + staged,
                      mapping={c: b"".join(v) for c, v in per_customer.items()})
        pipe.execute()
        return bool(self._swap(args=[self.prefix, day.isoformat(), staged]))

    def _run(self, mode: str, transactions: pl.DataFrame, newest: int = -1):
        """The script on ``transactions``; ``newest``: their latest microseconds (applying)."""
        status, state, result = self._score(args=[self.prefix, mode, newest,
                                                  *_script_args(transactions)])
        return status.decode(), dt.date.fromisoformat(state.decode()) if state else None, result

    @staticmethod
    def _refused(transactions: pl.DataFrame, state: dt.date | None, refused,
                 pending: set[int] = frozenset()) -> Refused | None:
        """The refusal the script's verdicts mean, worded as ``MemoryStore`` words it."""
        ids = transactions.get_column("transaction_id")
        applied = {ids[int(i)] for i, kind in refused if kind == b"applied"}
        return refusal_of(list(transactions.iter_rows()), state,
                          lambda i: i in applied or i in pending)

    def refusal(self, transactions: pl.DataFrame, pending: set[int]) -> Refused | None:
        _, state, refused = self._run("check", transactions)
        return self._refused(transactions, state, refused, pending)

    def replay(self, journal: pl.DataFrame) -> int:
        applied = 0
        for start in range(0, journal.height, 5_000):
            part = journal.slice(start, 5_000)
            # Logged rows may hold timestamps Python cannot (year 0): polars takes the latest.
            applied += self._run("replay", part, int(_micros(part["tx_datetime"]).max()))[2]
        return applied

    def score_features(self, transactions: pl.DataFrame, feature_rows: int
                       ) -> tuple[Features, dt.date | None]:
        status, state, out = self._run("score", transactions, _newest_micros(transactions))
        if status == "refused":
            raise self._refused(transactions, state, out)
        views = [out[i:i + 4] for i in range(0, len(out), 4)]
        if transactions.height > feature_rows:
            return Features.from_frame(transactions, self._frame_features(transactions, views)), state
        rows = []
        for (_, when, _, _, amount), (customer, terminal, before, today) in zip(
                transactions.iter_rows(), views):
            base = None
            if customer:
                base = list(_CUSTOMER.unpack(customer))
                base[-1] = None if base[-1] == _NULL else base[-1]
            events = [(e[1], e[2], e[3]) for e in struct.iter_unpack("<4q", before + today)]
            rows.append(online_features(when, amount, base,
                                        _TERMINAL.unpack(terminal) if terminal else None, events))
        return Features(transactions, np.array(rows, dtype=np.float64)), state

    def _frame_features(self, transactions: pl.DataFrame, views: list) -> pl.DataFrame:
        """``features_for_day`` on the rows Redis returned, rebuilt as a state and the day's
        earlier transactions (the request's own are added back by ``features_for_day``)."""
        customers, terminals, before, today = {}, {}, {}, {}
        for customer_id, terminal_id, (customer, terminal, earlier, now) in zip(
                transactions["customer_id"].to_list(), transactions["terminal_id"].to_list(), views):
            if customer:
                customers[customer_id] = customer
            if terminal:
                terminals[terminal_id] = terminal
            before[customer_id], today[customer_id] = earlier, now
        state = pl.concat([
            _unpacked(customers, _CUSTOMER, "customer_id", CUSTOMER_STATE).with_columns(
                pl.when(pl.col("c_last_tx") != _NULL).then(pl.col("c_last_tx"))
                .cast(pl.Datetime("us")), entity=pl.lit("customer")),
            _unpacked(terminals, _TERMINAL, "terminal_id", TERMINAL_STATE).with_columns(
                entity=pl.lit("terminal")),
            _event_frame(before).with_columns(entity=pl.lit("transaction")),
        ], how="diagonal_relaxed")
        own = transactions.get_column("transaction_id").implode()
        earlier = _event_frame(today).filter(~pl.col("transaction_id").is_in(own))
        return features_for_day(transactions, state, earlier)

    def info(self) -> StoreInfo:
        state, newest, applied = self._info(args=[self.prefix])
        return StoreInfo(
            self.backend, dt.date.fromisoformat(state.decode()) if state else None,
            _EPOCH + dt.timedelta(microseconds=int(newest)) if newest else None, int(applied))


def _unpacked(rows: dict[int, bytes], packer: struct.Struct, key: str, names) -> pl.DataFrame:
    values = (np.frombuffer(b"".join(rows.values()), dtype="<i8").reshape(-1, len(names))
              if rows else np.empty((0, len(names)), dtype=np.int64))
    return pl.DataFrame({key: list(rows), **{n: values[:, i] for i, n in enumerate(names)}},
                        schema={key: pl.Int64, **{n: pl.Int64 for n in names}})


def _event_frame(blobs: dict[int, bytes]) -> pl.DataFrame:
    """Packed events, with their customer, as ``EVENT_COLUMNS``: all blobs read as one array,
    not an array per customer (a day's batch has thousands)."""
    customers = [customer for customer, blob in blobs.items() if blob]
    events = np.frombuffer(b"".join(blobs[c] for c in customers), dtype="<i8").reshape(-1, 4)
    owners = np.repeat(np.array(customers, dtype=np.int64),
                       [len(blobs[c]) // _EVENT.size for c in customers])
    return pl.DataFrame({
        "transaction_id": events[:, 0], "tx_datetime": events[:, 1], "customer_id": owners,
        "terminal_id": events[:, 3], "tx_cents": events[:, 2],
    }, schema={"transaction_id": pl.Int64, "tx_datetime": pl.Int64, "customer_id": pl.Int64,
               "terminal_id": pl.Int64, "tx_cents": pl.Int64}).with_columns(
        pl.col("tx_datetime").cast(pl.Datetime("us"))).select(EVENT_COLUMNS)
