"""The ``riverline`` command line.

:mod:`~streams.cli.main` holds the built-in commands (the ``kafka`` and ``models`` groups
in :mod:`~streams.cli.kafka_commands` and :mod:`~streams.cli.model_commands`) and adds the
plugin commands other packages register (:mod:`~streams.cli.plugins`);
:mod:`~streams.cli.commands` is what both share. The demo and the helpers that run and
query a worker live beside them.
"""
