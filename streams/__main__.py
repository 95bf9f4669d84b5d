"""``python -m streams`` is the ``riverline`` command."""

from streams.cli import main

main()
