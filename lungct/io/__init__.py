"""Reading scans into one in-memory form, whatever the format on disk."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungct.errors import LungctError
from lungct.geometry import geometry_summary
from lungct.io.atomic import write_json
from lungct.io.dicom import read_series
from lungct.io.discover import CaseSource, discover
from lungct.io.nifti_orientation import FLAG as ORIENTATION_FLAG
from lungct.io.nifti_orientation import assumption_warning, orientation_codes, states_no_orientation
from lungct.io.volumes import read_volume, suffix_of, write_nifti

__all__ = ["Scan", "load_scan", "load_case", "discover", "CaseSource", "write_nifti", "write_json"]


@dataclass
class Scan:
    """A scan as read: values after DICOM rescale, its voxel-to-world affine and where it came from.

    `array` is float32 in (x, y, z) voxel order and `affine` maps voxels to RAS millimetres. `header` is
    the input's NIfTI header when there was one, so outputs on the native grid copy its geometry exactly.
    """

    name: str
    array: np.ndarray
    affine: np.ndarray
    sources: list[Path]
    format: str
    header: object | None = None
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # QC flags reading raised (e.g. an orientation assumed)

    @property
    def source(self) -> Path:
        """The file or DICOM folder read; the scan's name for an array built in memory."""
        if not self.sources:
            return Path(self.name)
        return self.sources[0] if len(self.sources) == 1 else self.sources[0].parent

    def geometry(self) -> dict:
        return geometry_summary(self.array.shape, self.affine)


def load_case(case: CaseSource) -> Scan:
    """Read one discovered CT case, or raise LungctError with the problem discovery found."""
    refusal = case.refusal("ct")
    if refusal:
        raise LungctError(case.source, refusal)
    if case.kind == "dicom":
        array, affine, info, warnings = read_series(case.slices, case.source)
        scan = Scan(case.name, array, affine, list(case.paths), "dicom", None, info, warnings + case.notes)
    else:
        array, affine, header = read_volume(case.paths[0], case.assume_orientation)
        scan = Scan(case.name, array, affine, list(case.paths), suffix_of(case.paths[0]).lstrip("."), header)
        if states_no_orientation(header):
            scan.warnings.append(assumption_warning(case.assume_orientation))
            scan.flags.append(ORIENTATION_FLAG)
    _check_readable_content(scan)
    return scan


def load_scan(path: str | Path, series_uid: str | None = None, assume_orientation: str | None = None) -> Scan:
    """Read one scan: a volume file, a DICOM file, or a folder holding one DICOM series.

    A folder with several series needs `series_uid`; the error lists what is there. `assume_orientation`
    ("RAS", "LPS", ...) reads a NIfTI whose header states no orientation (refused without it).
    """
    path = Path(path)
    cases = [c for c in discover([path]) if c.modality == "ct" or path.is_file()]
    if series_uid is not None:
        cases = [c for c in cases if c.slices and c.slices[0].series_uid == series_uid]
        if not cases:
            raise LungctError(path, f"holds no DICOM series with SeriesInstanceUID {series_uid}")
    if not cases:
        raise LungctError(path, "holds no scans (DICOM, NIfTI, NRRD or MHA)")
    if len(cases) > 1:
        listing = "; ".join(f"{c.name} ({len(c.paths)} files)" for c in cases[:5])
        raise LungctError(path, f"holds {len(cases)} scans, expected one: {listing}"
                                f"{' ...' if len(cases) > 5 else ''} (pass series_uid, or use a batch command)")
    cases[0].assume_orientation = orientation_codes(assume_orientation)
    return load_case(cases[0])


def _check_readable_content(scan: Scan) -> None:
    array = scan.array
    if array.size == 0 or min(array.shape) == 0:
        raise LungctError(scan.source, f"image has no voxels (shape {array.shape})")
    if array.shape[0] < 16 or array.shape[1] < 16:
        raise LungctError(scan.source, f"image is too small for a CT slice ({array.shape[0]}x{array.shape[1]})")
    if array.dtype.kind == "f" and not np.isfinite(array).all():  # integers are always finite
        raise LungctError(scan.source, "image holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if high - low < 1e-6:
        raise LungctError(scan.source, f"image is constant (every voxel is {low:g})")
