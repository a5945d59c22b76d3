"""Find the cases in what the user passed, searching folders recursively: CT volume files, DICOM CT
series (grouped by SeriesInstanceUID), and radiographs (pictures, DICOM CR/DX files), each case with
its modality, so one folder may hold both kinds in any nesting."""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lungct.errors import LungctError
from lungct.io.dicom import DicomSlice, is_dicom_file, read_header
from lungct.io.series_members import LOCALIZER_SERIES, localizer_note, select_members
from lungct.io.volumes import PICTURE_SUFFIXES, VOLUME_SUFFIXES, stem_of, suffix_of

IGNORED_NAMES = {"DICOMDIR", "LOCKFILE", "VERSION"}
CT_REFUSAL = "is a CT scan, not a radiograph; use a CT model or --modality ct"
COMPANION_SUFFIXES = (".raw", ".zraw", ".img", ".hdr")  # data halves of .mhd/.nhdr/Analyze pairs


@dataclass
class CaseSource:
    """One case to process: a volume file, a picture, or the files of one DICOM series."""

    name: str
    kind: str  # "volume", "dicom" or "picture"
    paths: list[Path]
    slices: list[DicomSlice] = field(default_factory=list)
    problem: str | None = None  # found while discovering: the case fails with this reason
    notes: list[str] = field(default_factory=list)
    modality: str = "ct"  # "ct" or "cxr" (a radiograph)
    left_out: list[Path] = field(default_factory=list)  # files of its series folder that are not its slices
    assume_orientation: str | None = None  # how a NIfTI that states no orientation is stored ("RAS", ...)

    def refusal(self, wanted: str) -> str | None:
        """Why this case cannot go to a `wanted` ("ct" or "cxr") path, or None when it can."""
        if self.problem:
            return self.problem
        if self.modality == wanted:
            return None
        if wanted == "ct":
            if self.kind == "picture":
                return f"is a 2D picture ({suffix_of(self.paths[0])[1:].upper()}), not a CT scan (a radiograph?)"
            return f"DICOM Modality is {self.slices[0].modality or 'missing'} (a radiograph), not CT"
        return CT_REFUSAL

    @property
    def source(self) -> Path:
        """What to name in messages: the file, or the series folder."""
        if self.kind == "dicom" and len(self.paths) > 1:
            return common_folder(self.paths)
        return self.paths[0]


def common_folder(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def _files_under(folder: Path) -> list[Path]:
    """Every file below `folder`, following symbolic links to folders (Path.rglob does not in 3.11)."""
    found = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()
        found.extend(Path(root) / name for name in names)
    return sorted(p for p in found if p.is_file())


def discover(inputs: list[Path]) -> list[CaseSource]:
    """Cases in files and folders (searched recursively), in a stable order, with unique names."""
    volumes, pictures, dicom_files = [], [], []
    for item in inputs:
        item = Path(item)
        if not item.exists():
            raise LungctError(item, "no such file or folder")
        files = [item] if item.is_file() else _files_under(item)
        for path in files:
            if any(part.startswith(".") for part in path.relative_to(item).parts) and item.is_dir():
                continue  # hidden files and our own temporary outputs
            if path.name.upper() in IGNORED_NAMES:
                continue
            suffix = suffix_of(path)
            if suffix in VOLUME_SUFFIXES:
                volumes.append(path)
            elif suffix in PICTURE_SUFFIXES:
                pictures.append(path)
            elif suffix in COMPANION_SUFFIXES:
                continue
            elif is_dicom_file(path):
                dicom_files.append(path)
            elif item.is_file():
                raise LungctError(path, "not a recognised scan (expected DICOM, .nii/.nii.gz, .nrrd or .mha)")
    cases = [CaseSource(stem_of(p), "volume", [p]) for p in volumes]
    cases += [CaseSource(stem_of(p), "picture", [p], modality="cxr") for p in pictures]
    cases += _dicom_cases(dicom_files)
    _make_names_unique(cases)
    return sorted(cases, key=lambda c: c.name)


def _dicom_cases(files: list[Path]) -> list[CaseSource]:
    groups: dict[tuple, list[DicomSlice]] = defaultdict(list)
    broken: list[CaseSource] = []
    for path in files:
        try:
            header = read_header(path)
        except LungctError as err:
            broken.append(CaseSource(stem_of(path), "dicom", [path], problem=err.reason))
            continue
        if header.kind == "cxr":  # a radiograph is one file, whatever its series
            broken.append(CaseSource(stem_of(path), "dicom", [path], slices=[header], modality="cxr"))
            continue
        # Series without a UID (anonymised exports) are grouped by folder instead.
        groups[(header.series_uid or f"folder:{path.parent}",)].append(header)
    scout_keys = [key for key, slices in groups.items() if all(s.is_localizer for s in slices)]
    if len(scout_keys) == len(groups):  # only scouts: refused below (there is nothing else to segment)
        scout_keys = []
    scouts = [groups.pop(key) for key in scout_keys]  # beside other series: left out, said in theirs
    cases = []
    by_folder: dict[Path, list] = defaultdict(list)
    for key, slices in groups.items():
        by_folder[common_folder([s.path for s in slices])].append((key, slices))
    for folder, series in by_folder.items():
        for key, slices in series:
            name = folder.name or "dicom"
            if len(series) > 1:
                name = f"{name}_{slices[0].series_uid or len(slices)}"
            members, left_out, warnings = select_members(slices)
            case = CaseSource(name, "dicom", [s.path for s in members], slices=members, notes=warnings,
                              left_out=[s.path for s in left_out])
            if all(s.is_localizer for s in slices):
                case.problem = LOCALIZER_SERIES
            elif slices[0].kind is None and slices[0].modality not in ("", "OT", "CT"):
                case.problem = f"{slices[0].kind_reason}: lungct segments chest CT and chest radiographs"
            if len(series) > 1:
                case.notes.append(f"{folder} holds {len(series)} series; this is series {slices[0].series_uid}")
            cases.append(case)
    for scout in scouts:  # said in the sidecars of the series nearest to it in the folder tree
        nearest = _nearest(cases, scout[0].path)
        for case in nearest:
            case.notes.append(localizer_note(scout))
            case.left_out += [s.path for s in scout]
    return cases + broken


def _nearest(cases: list[CaseSource], path: Path) -> list[CaseSource]:
    """The cases whose folders share the longest part of `path`."""
    shared = {id(case): len(os.path.commonpath([os.path.abspath(case.source), os.path.abspath(path)]))
              for case in cases}
    return [case for case in cases if shared[id(case)] == max(shared.values())]


def _make_names_unique(cases: list[CaseSource]) -> None:
    """Equal names get their parent folders prefixed, then a counter, so outputs never collide."""
    seen: dict[str, list[CaseSource]] = defaultdict(list)
    for case in cases:
        seen[case.name].append(case)
    for name, group in seen.items():
        if len(group) == 1:
            continue
        for case in group:
            parent = case.source.parent.name
            case.name = f"{parent}_{case.name}" if parent else case.name
    counts: dict[str, int] = defaultdict(int)
    for case in cases:
        counts[case.name] += 1
        if counts[case.name] > 1:
            case.name = f"{case.name}_{counts[case.name]}"
