"""Sparkplug B (Eclipse Sparkplug 3.0 / 2.2): a pure dialect, its topics, metrics and commands.

`sparkplug_b.proto` is the Eclipse Tahu definition, unchanged (EPL-2.0, its header kept);
`sparkplug_b_pb2.py` and `.pyi` are generated from it by `make sparkplug-proto` and never edited.
"""
