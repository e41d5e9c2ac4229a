"""The assets, a module per group."""

import fraud_dagster.known_warnings  # noqa: F401  (before any asset asks for a beta API)
