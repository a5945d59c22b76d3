"""Which files of a DICOM series folder make the volume, and which are left out with a warning.

A series folder often holds more than its slices: the scout the technologist planned on (a localizer, in
the series or in a series of its own), a derived image saved into the series (a secondary capture, a
reformat), a file copied twice. Taken as slices they refuse the series ("mixes image sizes", "two
acquisitions?") or, worse, join it. So, naming each file left out:
- exact duplicates (the same SOPInstanceUID and the same bytes) are dropped;
- localizers (ImageType LOCALIZER) among other images are left out, and a localizer series of its own is
  left out of a batch that holds other series (alone, it is still refused: there is nothing to segment);
- derived images (ImageType DERIVED or SECONDARY) among original ones are left out;
- images whose orientation or size differs from the one most of the series' images share are left out
  (with no such majority the series is refused as before).
"""
from __future__ import annotations

import filecmp
import os
from collections import Counter, defaultdict

from lungct.io.dicom import DicomSlice

LOCALIZER_SERIES = "is a localizer (scout) series, not a CT volume"
NAMES_SHOWN = 3


def named(slices: list[DicomSlice]) -> str:
    """'a.dcm, b.dcm and 3 more'."""
    names = sorted(s.path.name for s in slices)
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


def select_members(slices: list[DicomSlice]) -> tuple[list[DicomSlice], list[DicomSlice], list[str]]:
    """(the slices that make the volume, the files left out, a warning for each kind left out)."""
    kept, left_out, warnings = sorted(slices, key=lambda s: s.path), [], []
    for rule in (_duplicates, _localizers, _derived, _odd_geometry):
        if len(kept) < 2:
            break
        dropped, warning = rule(kept)
        if dropped:
            kept = [s for s in kept if s not in dropped]
            left_out += dropped
            warnings.append(warning)
    return kept, left_out, warnings


def _duplicates(slices: list[DicomSlice]) -> tuple[list[DicomSlice], str]:
    by_uid = defaultdict(list)
    for item in slices:
        if item.sop_uid:
            by_uid[item.sop_uid].append(item)
    copies = [item for group in by_uid.values() for item in group[1:]
              if filecmp.cmp(group[0].path, item.path, shallow=False)]
    return copies, f"left out {len(copies)} byte-identical duplicate file(s): {named(copies)}"


def _localizers(slices: list[DicomSlice]) -> tuple[list[DicomSlice], str]:
    scouts = [s for s in slices if s.is_localizer]
    if len(scouts) == len(slices):
        return [], ""
    return scouts, f"left out {len(scouts)} localizer (scout) image(s), ImageType LOCALIZER: {named(scouts)}"


def _derived(slices: list[DicomSlice]) -> tuple[list[DicomSlice], str]:
    if not any(s.image_type[:1] == ("ORIGINAL",) for s in slices):
        return [], ""  # a derived series (a reformat, a resampled export) is a series like any other
    derived = [s for s in slices if s.image_type[:1] == ("DERIVED",) or s.image_type[1:2] == ("SECONDARY",)]
    return derived, (f"left out {len(derived)} derived image(s), ImageType DERIVED or SECONDARY among original "
                     f"ones: {named(derived)}")


def _geometry_key(item: DicomSlice) -> tuple:
    return item.rows, item.columns, tuple(round(v, 3) for v in item.orientation or ())


def _odd_geometry(slices: list[DicomSlice]) -> tuple[list[DicomSlice], str]:
    common, count = Counter(map(_geometry_key, slices)).most_common(1)[0]
    if 2 * count <= len(slices):
        return [], ""  # no orientation and size most images share: refused when read
    odd = [s for s in slices if _geometry_key(s) != common]
    return odd, (f"left out {len(odd)} image(s) whose orientation or size differs from most of the series' "
                 f"({common[1]}x{common[0]} pixels, ImageOrientationPatient {list(common[2])}): {named(odd)}")


def localizer_note(scout: list[DicomSlice]) -> str:
    folder = os.path.commonpath([str(s.path.parent) for s in scout])
    return (f"left out the localizer (scout) series {scout[0].series_uid or 'without a UID'} in {folder} "
            f"({len(scout)} file(s): {named(scout)})")
