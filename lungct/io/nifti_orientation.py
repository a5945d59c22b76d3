"""A NIfTI file whose header states no orientation (qform_code = sform_code = 0).

Such a header gives voxel sizes but not which way the axes point. nibabel then guesses the old Analyze
convention (x towards the patient's left): on a file stored in RAS order that swaps right and left, and a
mask labelled from it names the wrong lung. So lungct refuses the file unless the user says how its
voxels are stored (--assume-orientation RAS, LPS, ...); the assumption is then recorded in the sidecar as
a warning and the QC flag "orientation_assumed", and the mask keeps the input's codes (0, 0), so that
it lies on the input's voxels in any reader, whatever that reader guesses.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np

from lungct.errors import LungctError

NIBABEL_GUESS = "nibabel"  # nibabel's own fallback, for comparing two files with each other (lungct evaluate)
FLAG = "orientation_assumed"
REFUSAL = ("the NIfTI header states no orientation (qform_code = sform_code = 0), so right and left are unknown: "
           "say how its voxels are stored with --assume-orientation (e.g. RAS or LPS)")
PAIRS = ("RL", "AP", "SI")


def states_no_orientation(header) -> bool:
    """True for a NIfTI header with neither a qform nor an sform code."""
    return header is not None and int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0


def orientation_codes(text: str | None) -> str | None:
    """`text` as three orientation letters (e.g. "RAS"), checked; LungctError when it is not one."""
    if text is None:
        return None
    codes = str(text).strip().upper()
    pairs_named = sorted(pair for letter in codes for pair in PAIRS if letter in pair)
    if len(codes) != 3 or pairs_named != sorted(PAIRS):
        raise LungctError(None, f"--assume-orientation {text}: expected three letters naming where the voxel axes "
                                "point, one of R/L, A/P and S/I each (e.g. RAS, LPS, LAS)")
    return codes


def assumed_affine(path, header, shape, codes: str | None) -> np.ndarray:
    """The RAS affine of an unoriented NIfTI read as `codes` say (voxel sizes from the header, the grid
    centred on the origin as nibabel does), or nibabel's guess for NIBABEL_GUESS; refused without codes."""
    if codes is None:
        raise LungctError(path, REFUSAL)
    if codes == NIBABEL_GUESS:
        return np.asarray(header.get_best_affine(), dtype=float)
    zooms = [abs(float(z)) or 1.0 for z in header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))  # a 2D file is read as one slice
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (world, sign) in enumerate(nib.orientations.axcodes2ornt(tuple(orientation_codes(codes)))):
        affine[int(world), axis] = sign * zooms[axis]
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape[:3], dtype=float) - 1) / 2)
    return affine


def assumption_warning(codes: str) -> str:
    return (f"the NIfTI header states no orientation (qform_code = sform_code = 0): its voxels were read as {codes}, "
            "as --assume-orientation says; the mask keeps the input's codes (0, 0)")
