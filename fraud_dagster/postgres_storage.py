"""dagster-postgres's storages, keeping a connection open between statements.

dagster-postgres's run, event log and schedule storages connect anew for every statement they
run (SQLAlchemy's ``NullPool``, so that no instance holds a connection it does not use). Storing
one event takes two or three of them (the event, then its asset index), and a PostgreSQL
connection costs 6-10 ms to open on loopback against 0.3 ms for an INSERT: a run that plans and
materialises hundreds of partitions spent most of its bookkeeping opening connections (README,
"Benchmark figures"). These are the same storages with SQLAlchemy's ``QueuePool`` of one
connection per process, as dagster-webserver already gives itself (``optimize_for_webserver``);
more are opened only while that one is in use, and closed when returned. ``pool_pre_ping``
checks the kept connection before each use, so a restarted server costs a reconnect, not a
failed run. A forked child drops the parent's connections (SQLAlchemy's advice for ``os.fork``);
Dagster's executors spawn, which shares nothing.

``deploy/postgres/dagster.yaml`` names them as the instance's three storages.
"""

import os
import weakref

from dagster._serdes import ConfigurableClass
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

MAX_OVERFLOW = 10
"""Connections opened beyond the kept one while it is in use (closed when returned)."""


class _KeptConnection:
    """Replaces the storage's ``NullPool`` engine with a pooled one; configured as it is."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data=None, token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine.dispose()
        self._engine = create_pg_engine(
            self.postgres_url, self._token_provider, isolation_level="AUTOCOMMIT",
            pool_size=1, max_overflow=MAX_OVERFLOW, pool_pre_ping=True)
        engine = weakref.ref(self._engine)
        os.register_at_fork(after_in_child=lambda: engine() and engine().dispose(close=False))

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


class PooledPostgresRunStorage(_KeptConnection, PostgresRunStorage, ConfigurableClass):
    pass


class PooledPostgresEventLogStorage(_KeptConnection, PostgresEventLogStorage, ConfigurableClass):
    pass


class PooledPostgresScheduleStorage(_KeptConnection, PostgresScheduleStorage, ConfigurableClass):
    pass
