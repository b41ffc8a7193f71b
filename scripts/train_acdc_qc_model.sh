#!/usr/bin/env bash
# Trains, evaluates and packages the ACDC QC model from a QC data set.
# Usage: scripts/train_acdc_qc_model.sh QC_DATA RUN_DIR WORK_DIR
#   QC_DATA   output of scripts/build_acdc_qc_dataset.sh (build-dataset)
#   RUN_DIR   training run folder (resumable)
#   WORK_DIR  the variant workspace (its collected segmentations feed the baselines)
set -euo pipefail
data=${1:?QC_DATA}; run=${2:?RUN_DIR}; work=${3:?WORK_DIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
# MVSF loss terms weigh 0.1 (the default); 30 % of the 2D training slices are replaced by
# synthetically damaged or expert labels, scored against the expert labels in the data set; the
# epoch with the lowest validation DSC MAE is kept. The bundle predicts from one view of each
# slice: four views gain little and would take the forward pass past 100 ms per 10-slice subject.
/usr/bin/time -f "train: %e s" monai-qc -v train --data "$data" --run "$run" \
    --networks resnet2d,resnet3d --epochs 40 --epochs-3d 10 --damage-probability 0.3 \
    --select-by val_dsc_mae --test-time-views 1 --bundle-out "$repo/bundles/cmr_acdc_qc"
# The QC U-Net 2D (19 M parameters) takes 17-45 minutes per epoch on 2 CPU cores: one epoch,
# evaluated beside the ResNet, not shipped.
/usr/bin/time -f "train unet2d: %e s" monai-qc -v train --data "$data" --run "$run" \
    --networks unet2d --epochs 1 --damage-probability 0.3
# The QC ResNet that reads each slice with its neighbours (context_resnet2d, ~160 s per epoch):
# trained the same way and evaluated beside the ResNet, not shipped (lower slice DSC error on the
# test split, but not a lower 3D DSC error on the validation split).
/usr/bin/time -f "train context_resnet2d: %e s" monai-qc -v train --data "$data" --run "$run" \
    --networks context_resnet2d --epochs 40 --damage-probability 0.3 --select-by val_dsc_mae
# The QC ResNet that also learns to map the expert labels (expert_map_resnet2d, ~180 s per
# epoch): evaluated beside the ResNet, not shipped (lower 3D DSC error on the variant
# segmentations, but it rates expert-quality segmentations lower, and the gate then fails more
# of the ACDC expert label maps).
/usr/bin/time -f "train expert_map_resnet2d: %e s" monai-qc -v train --data "$data" --run "$run" \
    --networks expert_map_resnet2d --epochs 30 --damage-probability 0.3 --select-by val_dsc_mae
/usr/bin/time -f "evaluate: %e s" monai-qc -v evaluate --data "$data" --run "$run" \
    --collected "$work/collected" --out "$repo/benchmarks/results/evaluation" \
    --bundle "$repo/bundles/cmr_acdc_qc"
# Fine-tuning expert_map_resnet2d with a share of its synthetic damage applied to the expert
# labels themselves (near-expert slices, which the variant segmentations rarely give), in a run
# folder of its own: measured, not shipped (the expert label maps are rated about as before).
/usr/bin/time -f "fine-tune near-expert: %e s" monai-qc -v train --data "$data" \
    --run "${run}_near_expert" --networks expert_map_resnet2d --epochs 10 --learning-rate 3e-4 \
    --damage-probability 0.3 --damage-from-expert 0.5 \
    --init-weights "$run/expert_map_resnet2d/best.pt" --select-by val_dsc_mae
