"""Fetch two real, public chest CTs to try lungct on: the lung scans in pyradiomics' source release.

pyradiomics (BSD licence) ships `data/lung1_image.nrrd` and `data/lung2_image.nrrd` (512x512x48 and x61,
about 0.6x0.6x5 mm, NSCLC patients) in its source distribution on PyPI. This script downloads that
archive once (34 MB, checked against its SHA-256), extracts the two scans and deletes the archive.

    python examples/fetch_public_ct.py samples/      # -> samples/lung1.nrrd, samples/lung2.nrrd
    python examples/fetch_public_ct.py samples/ --labels tumours/   # and their tumour labels, tumours/lung1.nrrd ...
"""
from __future__ import annotations

import hashlib
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST_URL = ("https://files.pythonhosted.org/packages/03/c1/20fc2c50ab1e3304da36d866042a1905a2b05a1431ece35448ab6b4578f2/"
             "pyradiomics-3.1.0.tar.gz")
SDIST_SHA256 = "24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4"
MEMBERS = {"pyradiomics-3.1.0/data/lung1_image.nrrd": "lung1.nrrd",
           "pyradiomics-3.1.0/data/lung2_image.nrrd": "lung2.nrrd"}
LABELS = {"pyradiomics-3.1.0/data/lung1_label.nrrd": "lung1.nrrd",  # the tumour, drawn on the scan's grid
          "pyradiomics-3.1.0/data/lung2_label.nrrd": "lung2.nrrd"}


def fetch(out_dir: Path, labels_dir: Path | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {member: out_dir / name for member, name in MEMBERS.items()}
    if labels_dir is not None:  # a folder of its own: a label inside the scans folder would be read as a scan
        labels_dir.mkdir(parents=True, exist_ok=True)
        wanted.update({member: labels_dir / name for member, name in LABELS.items()})
    if all(path.is_file() for path in wanted.values()):
        print(f"already there: {', '.join(str(p) for p in wanted.values())}")
        return list(wanted.values())
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "pyradiomics.tar.gz"
        print(f"downloading {SDIST_URL} ...")
        urllib.request.urlretrieve(SDIST_URL, archive)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            sys.exit(f"error: {archive.name}: SHA-256 {digest} is not the published {SDIST_SHA256}")
        with tarfile.open(archive) as tar:
            for member, target in wanted.items():
                partial = target.with_name(f".{target.name}.part")
                with tar.extractfile(member) as source:
                    partial.write_bytes(source.read())
                partial.replace(target)
                print(f"wrote {target}")
    return list(wanted.values())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("samples"))
    parser.add_argument("--labels", type=Path, default=None, help="also the tumour labels, into this folder")
    arguments = parser.parse_args()
    fetch(arguments.out, arguments.labels)
