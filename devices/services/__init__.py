"""The domain's writes, one module per concept: devices, tokens, telemetry, commands, heartbeats, tickets.

Services are keyword-only and typed, atomic, and idempotent on a natural key; everything else
(views, consumers, management commands, the bridge) calls them.
"""
