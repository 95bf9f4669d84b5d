"""Kafka plumbing, below every stage.

:mod:`~streams.kafka.topics` creates and checks topics, :mod:`~streams.kafka.auth` turns
settings into client credentials and ACLs, :mod:`~streams.kafka.broker` runs the local
single-node broker.
"""
