"""Trust in what Riverline reads back and who may change it.

:mod:`~streams.trust.records` signs and checks the keyed MAC on every record Riverline
writes to its own topics; :mod:`~streams.trust.access` holds the admin API's roles.
"""
