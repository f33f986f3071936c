"""``python -m studio_run`` runs the ``studio`` command."""

from .cli import main

main()
