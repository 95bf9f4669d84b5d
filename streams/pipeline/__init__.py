"""What every stage shares, and the pass that runs them.

:mod:`~streams.pipeline.lineage` is the provenance each message carries,
:mod:`~streams.pipeline.stage` the contract of a stage's result, and
:mod:`~streams.pipeline.onepass` runs ingestion, features and models over a micro-batch.
"""
