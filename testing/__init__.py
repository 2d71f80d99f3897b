"""The one harness that tests/ and bench/ share: processes, clients, waiting, an in-memory transport.

Not part of the product: nothing under core/, devices/ or the edges imports it.
"""
