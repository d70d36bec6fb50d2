"""``python -m mlops_assets.cli ...`` runs the ``mlops`` command."""

from mlops_assets.cli import main

main()
