"""Kafka plumbing, below every stage.

:mod:`~streams.kafka.topics` creates and checks topics, :mod:`~streams.kafka.auth` turns
settings into client credentials and ACLs, :mod:`~streams.kafka.broker` runs the local
single-node broker (with its :mod:`~streams.kafka.server_properties`, the passwords of
:mod:`~streams.kafka.credentials`, the processes and files of
:mod:`~streams.kafka.process`) and :mod:`~streams.kafka.probe` asks a cluster whether it
answers.
"""
