"""The Redis channel layer with a bounded connection pool that waits for a free connection instead of failing."""

from __future__ import annotations

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer
from redis.asyncio import BlockingConnectionPool


class RedisChannelLayer(_RedisChannelLayer):
    """channels_redis's layer on redis-py's BlockingConnectionPool.

    With the default pool every concurrent command opens a connection and keeps it: a burst of
    1,000-3,000 dashboards connecting at once (a few group_adds each) left a web process holding
    ~1,000 idle Redis connections, and a pool capped lower failed with "Too many connections".
    This one opens at most `max_connections` and makes a burst wait its turn (up to `timeout` s).
    """

    def create_pool(self, index: int) -> BlockingConnectionPool:
        host = dict(self.hosts[index])
        return BlockingConnectionPool.from_url(host.pop("address"), **host)
