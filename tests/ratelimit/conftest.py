from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server for the session; the test is skipped when none can be had."""
    from tests.ratelimit.redis_server import RedisUnavailable, start_redis_server

    try:
        server = start_redis_server()
    except RedisUnavailable as err:
        pytest.skip(f"no Redis server for the redis backend tests: {err}")
    yield server
    server.stop()
