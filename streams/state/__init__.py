"""Checkpointed state: what a pipeline saves, where, and how it comes back after a crash.

:mod:`~streams.state.checkpoint` is the checkpoint record and which events a restored
state skips; :mod:`~streams.state.store` writes and reads those records on Kafka;
:mod:`~streams.state.pipeline` saves a pipeline's feature state and models together with
the input offsets they reflect, and restores them when its partitions are assigned.
"""
