"""Telling radiographs from CT before any model runs, and refusing the wrong path with one clear line.

2D picture files and DICOM CR/DX/DR (or single 2D DICOM images without slice geometry) are radiographs;
NIfTI/NRRD/MHA volumes, CT DICOM and DICOM series folders are CT. `--modality` overrides this.
"""
from __future__ import annotations

from pathlib import Path

from lungct.errors import LungctError
from lungct.io.dicom import is_dicom_file
from lungct.io.volumes import PICTURE_SUFFIXES, VOLUME_SUFFIXES, suffix_of

MODALITIES = ("ct", "cxr")


def detect_modality(path: str | Path) -> str | None:
    """"cxr", "ct" or None (cannot tell / neither) for a file, or for a folder whose files all agree."""
    path = Path(path)
    if path.is_dir():
        from lungct.io.discover import _files_under

        kinds = {_file_modality(p) for p in _files_under(path) if not p.name.startswith(".")}
        kinds.discard(None)
        return kinds.pop() if len(kinds) == 1 else None
    return _file_modality(path) if path.is_file() else None


def _file_modality(path: Path) -> str | None:
    suffix = suffix_of(path)
    if suffix in PICTURE_SUFFIXES:
        return "cxr"
    if suffix in VOLUME_SUFFIXES:
        return "ct"
    if not is_dicom_file(path):
        return None
    import pydicom

    from lungct.cxr.reading import dicom_kind

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - unreadable: the reader will say why
        return None
    return dicom_kind(ds)[0]


def describe(path: Path) -> str:
    """What the file is, in words, for refusals: 'a 2D picture (PNG)', 'a DICOM DX radiograph', ..."""
    suffix = suffix_of(path)
    if suffix in PICTURE_SUFFIXES:
        return f"a 2D picture ({suffix[1:].upper()})"
    if suffix in VOLUME_SUFFIXES:
        return f"a {suffix[1:].upper()} volume"
    if is_dicom_file(path):
        import pydicom

        try:
            modality = str(pydicom.dcmread(str(path), stop_before_pixels=True, force=True).get("Modality", "") or "")
        except Exception:  # noqa: BLE001
            modality = ""
        return f"a DICOM {modality} image" if modality else "a DICOM image"
    return "a file"


def modality_mismatch(path: str | Path, wanted: str) -> LungctError | None:
    """The refusal for giving `path` to the `wanted` ("ct" or "cxr") model, or None when it fits or is unknown.

    Wording matches lungct.io.discover ("is a 2D picture (PNG), not a CT scan") and the radiograph reader.
    """
    if wanted not in MODALITIES:
        raise LungctError(None, f"unknown modality '{wanted}' (ct or cxr)")
    path = Path(path)
    found = detect_modality(path)
    if found is None or found == wanted:
        return None
    if wanted == "ct":
        return LungctError(path, f"is {describe(path)}, not a CT scan (a radiograph); "
                                 "use the radiograph model or --modality cxr")
    from lungct.cxr.reading import CT_VOLUME_REFUSAL

    return LungctError(path, CT_VOLUME_REFUSAL)


def check_modality(path: str | Path, wanted: str) -> None:
    """Raise the refusal of modality_mismatch, if any."""
    error = modality_mismatch(path, wanted)
    if error is not None:
        raise error
