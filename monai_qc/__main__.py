"""``python -m monai_qc`` runs the command line."""

from monai_qc.cli import main

main()
