"""The product's vocabulary, pure Python: ids, topics, payloads, frames, errors, the push message, the seam.

Nothing here imports Django's ORM or settings, or any other package of ours: every other
package may import core, and core can be tested and fuzzed alone.
"""
