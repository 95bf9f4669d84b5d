"""Events in: validation into canonical Avro, and the producers that send them.

:mod:`~streams.ingestion.stage` is the ingest stage; :mod:`~streams.ingestion.producer`
sends datasets (:mod:`~streams.ingestion.datasets`, the synthetic
:mod:`~streams.ingestion.transactions`) or users' files as events.
"""
