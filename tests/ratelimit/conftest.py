"""Fixtures of the budget tests: each backend, and across processes the sandbox and each shared backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_sfox.ratelimit import BudgetBackend, MemoryBackend, RedisBackend, SqliteBackend
from tests.helpers import TOKEN

if TYPE_CHECKING:
    from collections.abc import Iterator


def sandbox_module() -> Any:
    """The sandbox package: ``SandboxServer``, ``SandboxConfig``, ``RateLimitSettings``."""
    import sfox_sandbox

    return sfox_sandbox


@pytest.fixture
def sandbox() -> Iterator[Any]:
    module = sandbox_module()
    config = module.SandboxConfig(token=TOKEN, random_seed=1, rate_limit=module.RateLimitSettings(limit=0))
    with module.SandboxServer(config) as server:
        yield server


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def backend_extras(request, tmp_path, monkeypatch) -> dict[str, Any]:
    if request.param == "local":
        return {"rate_limit_backend": "local", "rate_limit_dir": str(tmp_path / "budget")}
    server = request.getfixturevalue("redis_server")
    import redis

    redis.Redis.from_url(server.url).flushall()
    monkeypatch.setenv("AIRFLOW_CONN_BUDGET_REDIS", server.url)
    return {"rate_limit_backend": "redis", "rate_limit_redis_conn_id": "budget_redis"}


@pytest.fixture(params=["memory", "local", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request, tmp_path) -> Iterator[BudgetBackend]:
    made: BudgetBackend
    if request.param == "memory":
        made = MemoryBackend()
    elif request.param == "local":
        made = SqliteBackend(tmp_path / "budget")
    else:
        import redis

        client = redis.Redis.from_url(request.getfixturevalue("redis_server").url)
        client.flushall()
        made = RedisBackend(client, "test redis")
    yield made
    made.close()
