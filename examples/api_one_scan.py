"""The preprocessing chain as a library, on one scan: read, segment, report volumes, save outputs.

    python examples/api_one_scan.py samples/lung1.nrrd out/
"""
import sys
from pathlib import Path

import lungct
from lungct.preprocess import write_case

scan_path = Path(sys.argv[1] if len(sys.argv) > 1 else "samples/lung1.nrrd")
out_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "out")

scan = lungct.load_scan(scan_path)                 # DICOM folder, NIfTI, NRRD or MHA; values in HU
print(f"{scan.name}: {scan.geometry()}")

recipe = lungct.load_recipe("preprocess")          # pipelines/preprocess.yaml; or your own copy
result = lungct.preprocess_scan(scan, recipe)      # orient, check HU, resample, body, lungs, mirror ROI
print("lung volumes (mL):", result.volumes_ml)
for warning in result.case["warnings"]:
    print("warning:", warning)

# result.lungs_native has the scan's own grid (1 = right lung, 2 = left lung); result.image/lungs/roi
# are on the 1 mm RAS grid with result.affine. write_case saves them all like `lungct preprocess`.
case_dir = write_case(result, recipe, out_dir, overwrite=True)
print("wrote", case_dir)
