"""Reading NIfTI, NRRD and MetaImage volumes; writing NIfTI atomically (lungct.io.atomic)."""
from __future__ import annotations

import contextlib
import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from lungct.errors import LungctError
from lungct.geometry import c_order, is_sheared, sitk_affine, sitk_to_array
from lungct.io.atomic import atomic_path
from lungct.io.nifti_orientation import assumed_affine, states_no_orientation
from lungct.os_names import itk_names

try:  # ISA-L gzip: a standard .gz stream, 2x faster to read and 6x to write than zlib (docs/design.md)
    from isal import igzip, isal_zlib
    GZIP_ERRORS = (zlib.error, isal_zlib.error)
except ImportError:  # pragma: no cover - plain zlib through nibabel then
    igzip = None
    GZIP_ERRORS = (zlib.error,)
GZIP_LEVEL = 2  # ISA-L's default: as small as zlib's level 1 on CT, faster than its level 1

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")

sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints warnings to stderr; we report our own


def suffix_of(path: Path | str) -> str:
    path = Path(path)
    name = path.name.lower()
    for suffix in VOLUME_SUFFIXES + PICTURE_SUFFIXES + (".dcm",):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def stem_of(path: Path) -> str:
    """File name without its (possibly double) extension."""
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.name


def read_volume(path: Path, assume_orientation: str | None = None) -> tuple[np.ndarray, np.ndarray, object | None]:
    """(float32 array in (x, y, z) order, RAS affine, NIfTI header or None) of a volume file.

    A NIfTI header that states no orientation is refused unless `assume_orientation` says how its voxels
    are stored (lungct.io.nifti_orientation)."""
    path = Path(path)
    suffix = suffix_of(path)
    if not path.is_file():
        raise LungctError(path, "no such file")
    if path.stat().st_size == 0:
        raise LungctError(path, "file is empty")
    if suffix in NIFTI_SUFFIXES:
        array, affine, header = _read_nifti(path)
        if states_no_orientation(header):
            affine = assumed_affine(path, header, array.shape, assume_orientation)
        return array, affine, header
    try:
        with itk_names([path]) as (name,):
            image = sitk.ReadImage(name)
    except RuntimeError as err:
        raise LungctError(path, f"cannot read {suffix[1:].upper()} file ({itk_reason(err)})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise LungctError(path, f"has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour or vector image), not a CT volume")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise LungctError(path, f"is {image.GetDimension()}-dimensional, expected a 3D CT volume")
    return compact(sitk_to_array(image)), sitk_affine(image), None


def compact(array: np.ndarray) -> np.ndarray:
    """Integer voxels as int16 when they fit (half the memory of float32); anything else float32."""
    return array.astype(compact_dtype(array), copy=False)


def compact_dtype(array: np.ndarray) -> type:
    if array.dtype.kind in "iu" and array.size and -32768 <= array.min() and array.max() <= 32767:
        return np.int16
    return np.float32


def _read_nifti(path: Path):
    try:
        with contextlib.ExitStack() as stack:
            stream = None
            if igzip is not None and path.name.lower().endswith(".gz"):
                stream = stack.enter_context(igzip.IGzipFile(str(path), "rb"))
            img = _load_nifti(path, stream)
            slope, inter = img.dataobj.slope, img.dataobj.inter
            unscaled = (slope in (1, None) or np.isnan(slope)) and (inter in (0, None) or np.isnan(inter))
            data = np.asanyarray(img.dataobj.get_unscaled()) if unscaled else np.asanyarray(img.dataobj)
    except (EOFError, gzip.BadGzipFile, OSError, ValueError, nib.filebasedimages.ImageFileError,
            *GZIP_ERRORS) as err:
        raise LungctError(path, f"cannot read NIfTI file: {_short(err) or 'truncated or corrupt'}") from None
    if data.dtype.fields is not None or data.ndim > 4 or (data.ndim == 4 and data.shape[3] != 1):
        raise LungctError(path, f"has shape {data.shape} ({data.dtype}): not a single 3D CT volume")
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise LungctError(path, f"has shape {data.shape}: not a 3D CT volume")
    # NIfTI stores x fastest: the (x, y, z) C-ordered copy the chain works on is made here, by blocks.
    data = np.asarray(data)
    return c_order(data, compact_dtype(data)), np.asarray(img.affine, dtype=float), img.header


NIFTI_CLASSES = {348: nib.Nifti1Image, 540: nib.Nifti2Image}  # by sizeof_hdr, the header's first field


def _load_nifti(path: Path, stream):
    """nibabel's image of a NIfTI file, read from `stream` (the decompressed .nii.gz) when given."""
    if stream is None:
        return nib.load(str(path))
    first = stream.read(4)
    stream.seek(0)
    klass = NIFTI_CLASSES.get(int.from_bytes(first, "little")) or NIFTI_CLASSES.get(int.from_bytes(first, "big"))
    if klass is None:  # not a NIfTI header: nibabel says what it is
        return nib.load(str(path))
    return klass.from_file_map({"image": nib.FileHolder(filename=str(path), fileobj=stream)})


def _short(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else ""


def itk_reason(err: Exception) -> str:
    """The one line of an ITK exception that says what went wrong."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for line in lines:
        if "Description:" in line:
            return line.split("Description:", 1)[1].strip()[:200]
    return (lines[-1] if lines else "unreadable")[:200]


# ---------------------------------------------------------------------------------------------- writing


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, header=None, dtype=None) -> Path:
    """Write an (x, y, z) array as NIfTI atomically; `header` (from an input) keeps its exact geometry."""
    array = np.asarray(array)
    if header is not None:
        header = header.copy()
        header.set_slope_inter(1.0, 0.0)
        img = nib.Nifti1Image(array, None, header=header)
        img.set_sform(header.get_sform(), int(header["sform_code"]))
        img.set_qform(header.get_qform(), int(header["qform_code"]))  # codes (0, 0) too: nothing is claimed
        if len(array.shape) < len(header.get_data_shape()):
            img.header.set_data_shape(array.shape)
    else:
        affine = np.asarray(affine, dtype=float)
        img = nib.Nifti1Image(array, affine)
        if is_sheared(affine):  # a qform is a rotation: one with a gantry tilt's shear stripped would misplace
            img.set_qform(None, 0)  # every slice but the first; the sform alone says where the voxels are
        else:
            img.set_qform(affine, 1)
        img.set_sform(affine, 1)
    img.header.set_xyzt_units("mm", "sec")
    img.set_data_dtype(dtype or array.dtype)
    with atomic_path(path) as tmp:
        if igzip is None or not tmp.name.endswith(".gz"):
            nib.save(img, str(tmp))
        else:  # nibabel writes the bytes, ISA-L compresses them (no name or time in the gzip header)
            with open(tmp, "wb") as raw, igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL,
                                                         mtime=0, filename="") as stream:
                img.to_file_map({"image": nib.FileHolder(filename=str(tmp), fileobj=stream)})
    return Path(path)
