"""Every view of the transaction columns (pandera tables, row rules, pydantic and msgspec request
models) agrees with their one statement, ``core.schema.COLUMNS``."""

import datetime as dt
import json
import math

import msgspec
import pytest
from pydantic import ValidationError

from fraud_dagster.core.schema import (
    COLUMNS,
    EARLIEST,
    LATEST,
    MAX_AMOUNT,
    REQUIRED_COLUMNS,
    TRANSACTION_COLUMNS,
    QuarantinedTransaction,
    RawTransaction,
    ValidatedTransaction,
    columns,
)
from fraud_dagster.serving.api import Transaction, _plain_batch, _PlainTransaction
from fraud_dagster_tests.test_validation import raw_day, reasons, with_value

INT64_MAX = 2**63 - 1
GOOD = {"transaction_id": 1, "tx_datetime": "2025-03-15T14:03:07", "customer_id": 2,
        "terminal_id": 3, "tx_amount": 12.5}


def test_the_tables_have_the_specs_columns_in_order_with_their_dtypes_and_descriptions():
    assert tuple(ValidatedTransaction.columns) == TRANSACTION_COLUMNS
    delivered = [c.name for c in columns("request", "label", "delivery")]
    assert list(RawTransaction.columns) == delivered
    assert list(QuarantinedTransaction.columns) == [*delivered, "quarantine_reason"]
    for table in (RawTransaction, ValidatedTransaction, QuarantinedTransaction):
        assert table.strict and not table.coerce
        for name, column in table.columns.items():
            spec = next(c for c in COLUMNS if c.name == name)
            assert column.dtype.type == spec.dtype, name
            assert column.description == spec.description, name


def test_the_validated_table_checks_the_specs_bounds_and_nullability():
    checks = {name: [(check.name, check.statistics) for check in column.checks]
              for name, column in ValidatedTransaction.columns.items()}
    ge = ("greater_than_or_equal_to", {"min_value": 0})
    assert checks == {
        "transaction_id": [ge], "tx_datetime": [], "customer_id": [ge], "terminal_id": [ge],
        "tx_amount": [ge, ("less_than_or_equal_to", {"max_value": MAX_AMOUNT}), ("finite", {})],
        "tx_fraud": [("isin", {"allowed_values": [0, 1]})], "tx_fraud_scenario": [ge],
        "label_reported_at": []}
    nullable = {name for name, column in ValidatedTransaction.columns.items() if column.nullable}
    assert nullable == {"tx_fraud", "tx_fraud_scenario", "label_reported_at"}
    assert [n for n, c in ValidatedTransaction.columns.items() if c.unique] == ["transaction_id"]
    raw_not_null = {name for name, column in RawTransaction.columns.items() if not column.nullable}
    assert raw_not_null == {"partition_date", "source"}


@pytest.mark.parametrize("column, value, reason", [
    ("transaction_id", -1, "transaction_id is negative"),
    ("customer_id", -1, "customer_id is negative"),
    ("terminal_id", -1, "terminal_id is negative"),
    ("tx_fraud", 2, "tx_fraud is not 0 or 1"),
    ("tx_fraud_scenario", -1, "tx_fraud_scenario is negative"),
    ("tx_amount", math.nextafter(MAX_AMOUNT, math.inf), "tx_amount over 1,000,000.00"),
])
def test_the_row_rules_quarantine_a_value_just_beyond_a_bound(column, value, reason):
    raw = with_value(raw_day(), 3, column, value)
    assert list(reasons(raw).values()) == [reason]


def test_the_reasons_keep_their_order_the_amounts_first():
    raw = with_value(with_value(raw_day(), 3, "transaction_id", -1), 3, "tx_amount", -1.0)
    assert list(reasons(raw).values()) == ["tx_amount is negative; transaction_id is negative"]


def test_the_request_models_have_the_specs_fields_descriptions_and_bounds():
    assert tuple(Transaction.model_fields) == REQUIRED_COLUMNS
    assert _PlainTransaction.__struct_fields__ == REQUIRED_COLUMNS
    assert _PlainTransaction.__struct_config__.forbid_unknown_fields
    plain = {f.name: f.type for f in msgspec.inspect.type_info(_PlainTransaction).fields}
    for spec in columns("request"):
        field = Transaction.model_fields[spec.name]
        assert field.description == spec.description
        bounds = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower())
                  for m in field.metadata}
        if spec.request_range:
            assert bounds == {"ge": spec.request_range[0], "lt": spec.request_range[1]}
            assert isinstance(plain[spec.name], msgspec.inspect.StrType)
            continue
        assert bounds == {"ge": spec.ge, "le": INT64_MAX if spec.le is None else spec.le}
        assert (plain[spec.name].ge, plain[spec.name].le) == (bounds["ge"], bounds["le"])


def _micros(when: dt.datetime) -> str:
    return when.isoformat(timespec="microseconds")


MICROSECOND = dt.timedelta(microseconds=1)
IDS = ("transaction_id", "customer_id", "terminal_id")
AT_THE_BOUNDS = [
    *((name, value) for name in IDS for value in (0, INT64_MAX)),
    ("tx_amount", 0), ("tx_amount", MAX_AMOUNT),
    ("tx_datetime", _micros(EARLIEST)), ("tx_datetime", _micros(LATEST - MICROSECOND)),
]
JUST_BEYOND = [
    *((name, value) for name in IDS for value in (-1, INT64_MAX + 1)),
    ("tx_amount", math.nextafter(0, -math.inf)), ("tx_amount", math.nextafter(MAX_AMOUNT, math.inf)),
    ("tx_datetime", _micros(EARLIEST - MICROSECOND)), ("tx_datetime", _micros(LATEST)),
]


def _batch(row: dict) -> bytes:
    return json.dumps({"transactions": [row]}).encode()


@pytest.mark.parametrize("name, value", AT_THE_BOUNDS)
def test_a_value_at_a_bound_is_accepted_by_pydantic_and_msgspec(name, value):
    row = {**GOOD, name: value}
    Transaction.model_validate_json(json.dumps(row))
    assert _plain_batch(_batch(row)) is not None


@pytest.mark.parametrize("name, value", JUST_BEYOND)
def test_a_value_just_beyond_a_bound_is_refused_by_pydantic_and_msgspec_naming_it(name, value):
    row = {**GOOD, name: value}
    with pytest.raises(ValidationError) as refused:
        Transaction.model_validate_json(json.dumps(row))
    assert [error["loc"] for error in refused.value.errors()] == [(name,)]
    assert _plain_batch(_batch(row)) is None
