"""The Redis channel layer with a bounded connection pool that waits for a free connection instead of failing.

`REDIS_URL` names one Redis (`redis://…`, `rediss://…`) or a master watched by Redis Sentinel
(`redis+sentinel://[:password@]host:port[,host:port…]/<master name>[/<db>]`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEME = "redis+sentinel"


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The master's pool as Sentinel names it, waiting for a free connection like BlockingConnectionPool."""


def redis_host(url: str, **options: Any) -> dict[str, Any]:
    """One entry of the layer's `hosts` for `url`: an address, or the sentinels and the master's name."""
    if not url.startswith(SENTINEL_SCHEME + "://"):
        return {"address": url, **options}
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    sentinels = [(host, int(port or 26379)) for host, _, port in (item.partition(":") for item in netloc.split(","))]
    path = [p for p in parts.path.split("/") if p]
    if not path or not all(host for host, _ in sentinels):
        raise ValueError(f"{SENTINEL_SCHEME} URL needs host:port[,host:port]/<master name>[/<db>]: {url!r}")
    password = unquote(parts.netloc.rpartition("@")[0].partition(":")[2]) or None
    host = {"sentinels": sentinels, "master_name": path[0], "db": int(path[1]) if len(path) > 1 else 0, **options}
    if password:
        # The master and its sentinels are usually given the same password (requirepass, sentinel auth-pass).
        host.update(password=password, sentinel_kwargs={"password": password})
    return host


class RedisChannelLayer(_RedisChannelLayer):
    """channels_redis's layer on redis-py's BlockingConnectionPool, directly or through Sentinel.

    With the default pool every concurrent command opens a connection and keeps it: a burst of
    1,000-3,000 dashboards connecting at once (a few group_adds each) left a web process holding
    ~1,000 idle Redis connections, and a pool capped lower failed with "Too many connections".
    This one opens at most `max_connections` and makes a burst wait its turn (up to `timeout` s).
    Behind Sentinel, the pool asks the sentinels for the master and follows a failover: a
    connection to a demoted master fails and the next one goes to the new master.
    """

    def create_pool(self, index: int) -> BlockingConnectionPool:
        host = dict(self.hosts[index])
        if "master_name" in host:
            sentinel = Sentinel(host.pop("sentinels"), sentinel_kwargs=host.pop("sentinel_kwargs", None),
                                socket_timeout=host.get("socket_connect_timeout"))
            return BlockingSentinelPool(host.pop("master_name"), sentinel, **host)
        return BlockingConnectionPool.from_url(host.pop("address"), **host)
