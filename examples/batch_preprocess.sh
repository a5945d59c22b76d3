#!/bin/sh
# A folder of scans (DICOM series in sub-folders, .nii/.nii.gz/.nrrd/.mha files) to per-case outputs.
# Run it twice: the second run resumes and skips finished cases. Non-zero exit when any case failed.
set -e
python examples/fetch_public_ct.py samples/
lungct preprocess samples/ -o prep/ --workers 2          # --recalibrate for scans whose air is not -1000 HU
column -s, -t < prep/summary.csv
