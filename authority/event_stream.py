"""The Mainflux platform-event stream (SPEC 14): its names, and a health check of it that any
process can run (the consumer itself runs in the scheduler)."""

import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

STREAM = "mainflux.things"
GROUP = "certs"


async def group_health(url: str, *, stream: str = STREAM, group: str = GROUP,
                       timeout: float = 0.5) -> dict[str, Any]:
    """A ``/health`` check of the platform events from any process: ``pass`` with the group's
    pending and not yet delivered entries when Redis answers, ``warn`` (and why, never the
    URL, which may hold a password) when it does not or the group is not there yet."""
    client = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                     socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
    try:
        groups: Any = await client.xinfo_groups(stream)
    except ResponseError:
        return {"status": "warn", "output": f"no stream {stream}"}
    except (RedisError, OSError) as exc:
        return {"status": "warn", "output": f"redis unavailable: {type(exc).__name__}"}
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    for info in groups:
        if info.get("name") == group:
            return {"status": "pass", "pending": int(info.get("pending") or 0),
                    "lag": info.get("lag")}
    return {"status": "warn", "output": f"no consumer group {group}"}
