"""``python -m qprserver`` runs the CLI."""

from qprserver.cli.main import main

main()
