"""The ``redis`` backend: the log, the pause and the hold of each scope on a Redis server."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any

from airflow_sfox.ratelimit.budget import (
    DEFAULT_MARGIN_SECONDS,
    MAX_PAUSE_SECONDS,
    MAX_WINDOW_SECONDS,
    OUTAGE_PROBE_GROWTH,
    Budget,
    BudgetBackend,
    BudgetHeld,
    BudgetUnavailable,
    Hold,
    Outage,
)

if TYPE_CHECKING:
    from collections.abc import Callable

#: KEYS: starts (sorted set), pause (string), hold (hash). ARGV: limit (0: none), span us, keep
#: us, member, longest pause us. Scores and the pause are microseconds of the server's TIME; the
#: hold's ``until`` (empty: until released) and ``since`` microseconds of the wall clock. Numbers
#: are passed to Redis as "%.0f" strings (Lua's own number-to-string keeps only 14 digits).
#: Returns {granted, wait us, 1: paused / 2: held [, until, reason, since]}.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function s(x) return string.format('%.0f', x) end
local held = redis.call('HMGET', KEYS[3], 'until', 'reason', 'since')
if held[3] and (held[1] == '' or tonumber(held[1]) > now) then
  return {0, '0', 2, held[1], held[2], held[3]}
end
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now and pause - now <= tonumber(ARGV[5]) then return {0, s(pause - now), 1} end
local limit = tonumber(ARGV[1])
if limit == 0 then return {1, '0', 0} end
local span = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', s(now - keep))
local low = '(' .. s(now - span)
local count = redis.call('ZCOUNT', KEYS[1], low, '+inf')
if count < limit then
  redis.call('ZADD', KEYS[1], s(now), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], s(math.ceil(keep / 1000) + 1000))
  return {1, '0', 0}
end
local slot = redis.call('ZRANGEBYSCORE', KEYS[1], low, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
return {0, s(tonumber(slot[2]) + span - now), 0}
"""

#: KEYS: pause. ARGV: seconds us. Extends the block-until time, never shortens it.
_PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function s(x) return string.format('%.0f', x) end
local want = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if want > current then
  redis.call('SET', KEYS[1], s(want), 'PX', s(math.ceil(tonumber(ARGV[1]) / 1000) + 1000))
end
return 1
"""

_PAUSED_FOR_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('GET', KEYS[1]) or '0')
if pause > now then return string.format('%.0f', pause - now) end
return '0'
"""

#: KEYS: outage (hash). ARGV: down, first probe us, growth. A new outage, or a failed probe of
#: the one recorded (the wait doubles, up to growth times the first). Returns the stored fields
#: and the microseconds to the next probe.
_TRIP_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function s(x) return string.format('%.0f', x) end
local first = tonumber(ARGV[2])
local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '-1') + 1
local wait = first * math.min(2 ^ math.min(probes, 30), tonumber(ARGV[3]))
if probes == 0 then
  wait = first
  redis.call('HSET', KEYS[1], 'since', s(now))
end
redis.call('HSET', KEYS[1], 'down', ARGV[1], 'probes', probes, 'probe_at', s(now + wait))
redis.call('PEXPIRE', KEYS[1], 86400000)
return {ARGV[1], redis.call('HGET', KEYS[1], 'since'), probes, s(wait)}
"""

#: KEYS: outage. ARGV: claim us (0: only read). Returns {} or the fields, the microseconds to the
#: next probe and 1 when the caller claimed it.
_OUTAGE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function s(x) return string.format('%.0f', x) end
local o = redis.call('HMGET', KEYS[1], 'down', 'since', 'probes', 'probe_at')
if not o[1] then return {} end
local left = math.max(0, tonumber(o[4]) - now)
local claim = tonumber(ARGV[1])
if claim > 0 and left == 0 then
  redis.call('HSET', KEYS[1], 'probe_at', s(now + claim))
  return {o[1], o[2], o[3], '0', 1}
end
return {o[1], o[2], o[3], s(left), 0}
"""

_US = 1_000_000


class RedisBackend(BudgetBackend):
    """
    A sorted set of start times (``sfox-budget:{scope}:starts``) and a block-until key
    (``sfox-budget:{scope}:pause``) on a Redis server, changed only by Lua scripts on the
    server's ``TIME``.

    :param client: a ``redis.Redis`` client.
    :param where: what to name in errors (the Airflow connection id and host:port).
    """

    name = "redis"

    def __init__(self, client: Any, where: str) -> None:
        self.where = where
        self._client = client
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._pause = client.register_script(_PAUSE_LUA)
        self._paused_for = client.register_script(_PAUSED_FOR_LUA)
        self._trip = client.register_script(_TRIP_LUA)
        self._outage = client.register_script(_OUTAGE_LUA)

    @staticmethod
    def _keys(key: str) -> tuple[str, str, str]:
        tag = "{" + key + "}"  # one hash slot per scope on a Redis cluster
        return f"sfox-budget:{tag}:starts", f"sfox-budget:{tag}:pause", f"sfox-budget:{tag}:hold"

    @staticmethod
    def _outage_key(key: str) -> str:
        return "sfox-budget:{" + key + "}:outage"

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return self._call(lambda: script(keys=keys, args=args))

    def _call(self, command: Callable[[], Any]) -> Any:
        import redis

        try:
            return command()
        except redis.RedisError as err:
            raise BudgetUnavailable(self.name, self.where, err) from None

    def acquire(self, key: str, budget: Budget | None) -> tuple[float, bool]:
        starts, pause, hold = self._keys(key)
        if budget is None:
            limit, span = 0, 0
        else:
            limit, span = budget.requests, round(budget.span * _US)
        keep = round(max(budget.span if budget else 0.0, MAX_WINDOW_SECONDS + DEFAULT_MARGIN_SECONDS) * _US)
        member = uuid.uuid4().hex
        granted, wait, paused, *held = self._run(
            self._acquire,
            [starts, pause, hold],
            [limit, span, keep, member, round(MAX_PAUSE_SECONDS * _US)],
        )
        if int(paused) == 2:
            raise BudgetHeld(_stored_hold(key, *held))
        if int(granted):
            return 0.0, False
        return max(int(wait) / _US, 1e-6), bool(int(paused))

    def pause(self, key: str, seconds: float) -> None:
        self._run(self._pause, [self._keys(key)[1]], [round(seconds * _US)])

    def paused_for(self, key: str) -> float:
        return int(self._run(self._paused_for, [self._keys(key)[1]], [])) / _US

    def set_hold(self, key: str, *, until: float | None, reason: str) -> None:
        hold = self._keys(key)[2]
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(hold)
        since = f"{time.time() * _US:.0f}"
        pipe.hset(
            hold,
            mapping={
                "until": "" if until is None else f"{until * _US:.0f}",
                "reason": reason,
                "since": since,
            },
        )
        if until is not None:  # gone by itself a day after it ends
            pipe.pexpireat(hold, round((until + 86400) * 1000))
        self._call(pipe.execute)

    def clear_hold(self, key: str) -> bool:
        return bool(self._call(lambda: self._client.delete(self._keys(key)[2])))

    def get_hold(self, key: str) -> Hold | None:
        until, reason, since = self._call(
            lambda: self._client.hmget(self._keys(key)[2], "until", "reason", "since")
        )
        if since is None:
            return None
        held = _stored_hold(key, until, reason, since)
        seconds, micros = self._call(self._client.time)
        if held.until is not None and held.until.timestamp() <= seconds + micros / _US:
            return None
        return held

    def trip(self, key: str, *, down: str, first_probe: float) -> Outage:
        stored = self._run(
            self._trip, [self._outage_key(key)], [down, round(first_probe * _US), OUTAGE_PROBE_GROWTH]
        )
        return _stored_outage(key, *stored)

    def outage(self, key: str, *, claim: float | None = None) -> tuple[Outage | None, bool]:
        stored = self._run(self._outage, [self._outage_key(key)], [round((claim or 0) * _US)])
        if not stored:
            return None, False
        *fields, claimed = stored
        return _stored_outage(key, *fields), bool(int(claimed))

    def close_outage(self, key: str) -> bool:
        return bool(self._call(lambda: self._client.delete(self._outage_key(key))))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def _stored_hold(key: str, until: bytes | str, reason: bytes | str, since: bytes | str) -> Hold:
    """A hold as the Redis hash stores it (microseconds as strings; Redis answers bytes)."""

    return Hold.from_epoch(
        key, _text(reason), int(_text(since)) / _US, int(_text(until)) / _US if _text(until) else None
    )


def _stored_outage(key: str, down: Any, since: Any, probes: Any, probe_in: Any) -> Outage:
    """An outage as the Redis hash stores it (microseconds as strings; Redis answers bytes)."""
    return Outage.from_epoch(
        key, _text(down), int(_text(since)) / _US, int(_text(probes)), int(_text(probe_in)) / _US
    )


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_client_from_connection(conn: Any) -> Any:
    """
    A ``redis.Redis`` client for an Airflow ``redis`` connection: host, port (6379), login,
    password, and the extras ``db`` (0) and ``ssl`` (false), as the Redis provider reads them.
    """
    import redis

    extras = conn.extra_dejson or {}
    ssl = extras.get("ssl", False)
    return redis.Redis(
        host=conn.host or "localhost",
        port=int(conn.port or 6379),
        username=conn.login or None,
        password=conn.password or None,
        db=int(extras.get("db", 0) or 0),
        ssl=ssl is True or str(ssl).lower() == "true",
        socket_timeout=5,
        socket_connect_timeout=5,
    )
