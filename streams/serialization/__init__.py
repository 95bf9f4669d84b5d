"""Schemas and wire formats.

The Avro schema catalog (:mod:`~streams.serialization.catalog`), compatibility between
versions (:mod:`~streams.serialization.compat`), the codecs of every accepted wire format
(:mod:`~streams.serialization.codec`, built on the validating walk of Avro bytes in
:mod:`~streams.serialization.avro_walk`, the bounded reader in
:mod:`~streams.serialization.avro_reader` and the JSON coercion in
:mod:`~streams.serialization.json_coercion`) and the compiled Avro writers behind them.
"""
