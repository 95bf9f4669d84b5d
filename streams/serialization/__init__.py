"""Schemas and wire formats.

The Avro schema catalog (:mod:`~streams.serialization.catalog`), compatibility between
versions (:mod:`~streams.serialization.compat`), the codecs of every accepted wire format
(:mod:`~streams.serialization.codec`) and the compiled Avro writers behind them.
"""
