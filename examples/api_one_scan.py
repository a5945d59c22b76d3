"""lungct as a library, on one scan: the classical preprocessing chain, then the shipped network.

    python examples/api_one_scan.py samples/lung1.nrrd out/
"""
import sys
from pathlib import Path

import lungct
from lungct.ct.preprocess import write_case
from lungct.segmentation import OutputPlan

scan_path = Path(sys.argv[1] if len(sys.argv) > 1 else "samples/lung1.nrrd")
out_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "out")

scan = lungct.load_scan(scan_path)                 # DICOM folder, NIfTI, NRRD or MHA; values in HU
print(f"{scan.name}: {scan.geometry()}")

# 1. The preprocessing chain (pipelines/preprocess.yaml): orient, check HU, resample, body, lungs, mirror ROI.
recipe = lungct.load_recipe("preprocess")          # or your own copy; overrides: {"Resampled.spacing_mm": 1.5}
result = lungct.preprocess_scan(scan, recipe)
print("chain lung volumes (mL):", result.volumes_ml)   # {'right_lung': ..., 'left_lung': ..., 'total': ...}
for warning in result.case["warnings"]:
    print("warning:", warning)

# result.lungs_native has the scan's own grid (1 = right lung, 2 = left lung); result.image/lungs/roi
# are on the 1 mm RAS grid with result.affine. write_case saves them all like `lungct preprocess`.
case_dir = write_case(result, recipe, out_dir, overwrite=True)
print("wrote", case_dir)

# 2. The network (`lungct infer`): the shipped CT model by default, or a checkpoint path, or "latest".
segmenter = lungct.load_segmenter(modality="ct", device="auto")   # load once, segment many scans
segmented = segmenter.segment(scan)                # a path, a discovered case or a loaded Scan
print(f"model {segmenter.model.name}: volumes (mL) {segmented.measures}, timings (s) {segmented.timings_s}")
for warning in segmented.warnings:
    print("warning:", warning)
# segmented.labels is uint8 on the scan's own grid (values in segmented.label_values); write() saves the
# mask, an optional preview and the JSON sidecar `lungct infer` writes, and returns that sidecar.
record = segmented.write(OutputPlan(mask=out_dir / f"{scan.name}-network.nii.gz",
                                    json=out_dir / f"{scan.name}-network.json",
                                    preview=out_dir / f"{scan.name}-network-preview.png"))
print("wrote", record["mask"])
