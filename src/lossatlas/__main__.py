"""``python -m lossatlas`` runs the command line."""

from lossatlas.cli import main

main()
