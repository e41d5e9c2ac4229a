"""The ``redis_server`` fixture gives a real Redis that redis-py talks to (the online feature
store's Redis backend is tested against it)."""

import redis


def test_the_redis_server_fixture_stores_and_returns_a_value(redis_server):
    client = redis.Redis.from_url(redis_server)
    try:
        assert client.set("fraud_dagster:probe", b"\x00state\xff")
        assert client.get("fraud_dagster:probe") == b"\x00state\xff"
        assert client.get("fraud_dagster:absent") is None
    finally:
        client.close()
