"""QC bundles shipped with monai-qc (installed as ``monai_qc.bundles``)."""
