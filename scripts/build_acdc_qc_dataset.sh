#!/usr/bin/env bash
# Builds the ACDC QC training data set from nnU-Net checkpoint variants.
# Usage: scripts/build_acdc_qc_dataset.sh DATASET_DIR WORK_DIR OUT_DIR
#   DATASET_DIR  nnU-Net raw data set, e.g. ../shared/data/Dataset027_ACDC
#   WORK_DIR     working folder (nnU-Net folders, checkpoints, segmentations); resumable
#   OUT_DIR      where the balanced QC data set is written
# Every stage skips work already done, so an interrupted run can be started again.
set -euo pipefail
dataset=${1:?DATASET_DIR}; work=${2:?WORK_DIR}; out=${3:?OUT_DIR}
mkdir -p "$work"
stage() { echo "== $1 $(date -u +%FT%TZ)"; }
stage train
/usr/bin/time -f "train: %e s" monai-qc -v variants train --dataset "$dataset" --work "$work" \
    --n-variants 12 --seed 2026 --epochs 2 40 --reference-epochs 200
# Eleven short variants (2-40 epochs of 25 iterations) and one long reference run (v00,
# 200 epochs, snapshots at 25/50/100/200) that reaches the well-segmented end of the range.
# Snapshots before epoch 7 segment (almost) nothing on ACDC at this budget. Whole-slice
# inference is fast and gives intermediate quality (short variants only); nnU-Net's sliding
# window gives the well-trained end: every case for the reference's last two snapshots, half
# of the patients for the other snapshots from epoch 20 on.
stage predict
/usr/bin/time -f "predict (whole slice): %e s" monai-qc -v variants predict --work "$work" \
    --min-epoch 7 --max-epoch 40 --whole-slice
/usr/bin/time -f "predict (sliding window, reference): %e s" monai-qc -v variants predict \
    --work "$work" --min-epoch 100
/usr/bin/time -f "predict (sliding window): %e s" monai-qc -v variants predict --work "$work" \
    --min-epoch 20 --case-fraction 0.5
stage build
# Balanced on MYO, the hardest class (lowest median DSC), as in the method; the low bin (mostly
# empty myocardium from short variants) and the top bin are capped at 400 volumes.
/usr/bin/time -f "build: %e s" monai-qc -v build-dataset --work "$work" --out "$out" \
    --spatial-size 96 96 --balance-class MYO --per-bin 400
stage done
