"""The ``riverline`` command line.

:mod:`~streams.cli.main` holds the commands; the demo and the helpers that run and query a
worker live beside it.
"""
