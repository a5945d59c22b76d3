#!/bin/sh
# The NSCLC pipeline's two stages on the two public NSCLC CTs (pyradiomics' lung1, lung2), from a fresh clone:
#   preprocess -> train a tumour model with labels drawn on the original scans -> lungs + tumour -> evaluate.
#   sh examples/tumour_workflow.sh [work-folder] [epochs]
# Two cases only show the workflow (lung1 trains, lung2 validates); a useful tumour model needs more:
# examples/train_tumour_model.py trains the shipped one on tumours painted into the shared CTs.
set -e
WORK=${1:-tumour-work}
EPOCHS=${2:-3}
python examples/fetch_public_ct.py "$WORK/scans" --labels "$WORK/tumours"
# 1. the classical chain: lungs, the mirrored lung ROI, the 1.5 mm training images
lungct preprocess "$WORK/scans" -o "$WORK/prep" --set Resampled.spacing_mm=1.5 --quiet
# 2. the tumour U-Net inside the lung ROI; the labels are on the original scans' grids
lungct train --dim 2d --data "$WORK/prep" --labels "$WORK/tumours" --config train-2d-tumour \
    --set "data.validation_cases=[lung2]" --set data.validation_fraction=0 --epochs "$EPOCHS" -o "$WORK/run"
# 3. lungs and tumour in one label map (3 = tumour), each tumour's volume, diameter and centroid in the JSON
lungct infer "$WORK/scans" -o "$WORK/masks" --model ct-lungs-2d --model "$WORK/run/best.pt" --overwrite
# 4. the tumour label against the reference tumours
lungct evaluate "$WORK/masks" "$WORK/tumours" --label tumour -o "$WORK/metrics.csv" --overwrite
