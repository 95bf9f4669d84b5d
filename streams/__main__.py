"""``python -m streams`` is the ``riverline`` command."""

from streams.cli.main import main

main()
