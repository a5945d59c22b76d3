#!/bin/sh
# The whole loop on ../shared/data: preprocess -> train -> infer -> evaluate.
#   sh examples/whole_loop.sh [work-folder] [epochs]
# Trains a small 2D model on the ct-slices (their manual masks; the train-2d input chain recalibrates HU
# and resamples to 1.5 mm), holding 20 % apart, then segments two volumes it never saw with it and
# measures them against their reference masks.
set -e
DATA=$(cd "$(dirname "$0")/../../shared/data" && pwd)
WORK=${1:-loop}
EPOCHS=${2:-12}
mkdir -p "$WORK/volumes" "$WORK/references"
ln -sf "$DATA/ct-volumes/imlab-id001/image.nii.gz" "$WORK/volumes/imlab-id001.nii.gz"
ln -sf "$DATA/ct-volumes/imlab-id002/image.nii.gz" "$WORK/volumes/imlab-id002.nii.gz"
ln -sf "$DATA/ct-volumes/imlab-id001/lungs.nii.gz" "$WORK/references/imlab-id001.nii.gz"
ln -sf "$DATA/ct-volumes/imlab-id002/lungs.nii.gz" "$WORK/references/imlab-id002.nii.gz"

# 1. the classical chain on the volumes (masks, ROI, volumes, previews in $WORK/prep)
lungct preprocess "$WORK/volumes" -o "$WORK/prep"
# 2. a 2D U-Net on the ct-slices and their manual masks
lungct train --dim 2d --images "$DATA/ct-slices/images" --labels "$DATA/ct-slices/masks" \
    --set "labels={background: 0, lungs: 1}" --set input.slice_size=[288,288] --set Resampled.spacing_mm=1.5 \
    --epochs "$EPOCHS" -o "$WORK/run"
# 3. that model on the volumes, masks in their own geometry (its input chain makes no lung ROI: no --roi)
lungct infer "$WORK/volumes" -o "$WORK/masks" --model "$WORK/run/best.pt" --preview "$WORK/masks"
# 4. Dice, IoU, HD95, ASSD and volume difference against the references
lungct evaluate "$WORK/masks" "$WORK/references" -o "$WORK/metrics.csv" --merge
