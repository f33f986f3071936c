"""``python -m studio_run`` runs the ``studio`` command."""

from .cli.main import main

main()
