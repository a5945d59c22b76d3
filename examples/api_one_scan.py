"""lungct as a library, on one scan: one call to the shipped model, the mask in the input's geometry.

    python examples/api_one_scan.py samples/lung1.nrrd out/ [--model MODEL]
"""
import argparse
from pathlib import Path

import nibabel as nib
import SimpleITK as sitk

import lungct

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("scan", type=Path, nargs="?", default=Path("samples/lung1.nrrd"))
parser.add_argument("out", type=Path, nargs="?", default=Path("out"))
parser.add_argument("--model", default=None, help="a checkpoint path or shipped name (default: the shipped model)")
args = parser.parse_args()

# 1. A path: a file or a DICOM folder. result.mask is a SimpleITK.Image on the scan's own grid.
result = lungct.segment(args.scan, model=args.model)
summary = result.summary  # the sidecar `lungct infer` writes
print(f"{args.scan}: {summary['volumes_ml']} mL by {summary['model']['name']}")
print("post-processing", summary["inference"]["postprocess"]["digest"], "warnings", summary["warnings"])
record = result.write(args.out / f"{lungct.load_scan(args.scan).name}-lungs.nii.gz", overwrite=True)
print("wrote", record["mask"])

# 2. An image already in memory keeps its form: SimpleITK in, SimpleITK out; nibabel in, nibabel out.
image = sitk.ReadImage(str(args.scan)) if args.scan.is_file() else None
if image is not None:
    aerated = lungct.segment(image, model=args.model, aerated=True)  # the same lungs without dense lesions
    print("aerated lungs:", aerated.summary["volumes_ml"], "mask size", aerated.mask.GetSize())
if args.scan.name.endswith((".nii", ".nii.gz")):
    mask = lungct.segment(nib.load(args.scan), model=args.model).mask
    print("nibabel mask", mask.shape, "affine kept:", (mask.affine == nib.load(args.scan).affine).all())
