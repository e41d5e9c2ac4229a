"""The API's request fields, derived from the column spec (``core.schema.COLUMNS``): pydantic's,
the contract and its documentation, and msgspec's, for the fast path that must accept exactly the
bodies pydantic accepts."""

from __future__ import annotations

from typing import Annotated

import msgspec
import polars as pl
from pydantic import Field, NaiveDatetime

from fraud_dagster.core.schema import Column, columns

_PYTHON = {pl.Int64: int, pl.Float64: float, pl.Datetime: NaiveDatetime}


def _bounds(column: Column) -> dict:
    """The column's bounds for a JSON value: a JSON integer must also fit the column's dtype, and a
    timestamp its ``request_range``."""
    if column.request_range is not None:
        earliest, latest = column.request_range
        return {"ge": earliest, "lt": latest}
    bounds = {"ge": column.ge, "le": column.le}
    if column.dtype.is_integer() and column.le is None:
        bounds["le"] = pl.select(column.dtype.max()).item()
    return {key: bound for key, bound in bounds.items() if bound is not None}


def pydantic_fields() -> dict[str, tuple[type, object]]:
    """``Transaction``'s fields, for ``pydantic.create_model``: in ``REQUIRED_COLUMNS`` order."""
    return {c.name: (_PYTHON[type(c.dtype)], Field(description=c.description, **_bounds(c)))
            for c in columns("request")}


def msgspec_fields() -> list[tuple[str, type]]:
    """``_PlainTransaction``'s fields, for ``msgspec.defstruct``. A timestamp stays text: the
    fast path checks its form and range itself (see ``api._PLAIN_DATETIME``). A float needs no
    finite check: msgspec's JSON has no NaN or Infinity."""
    return [(c.name, str if c.dtype.is_temporal() else
             Annotated[_PYTHON[type(c.dtype)], msgspec.Meta(**_bounds(c))])
            for c in columns("request")]
