"""What `lungct infer` writes beyond the mask: both lung conventions, densitometry (sidecar, statistics.csv,
histogram), DICOM-SEG/RTSTRUCT beside the NIfTI, confidence, and the QC page over a whole batch."""
from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pydicom
from click.testing import CliRunner

from lungct.cli import main
from lungct.labels import measure
from lungct.geometry import voxel_ml
from phantoms import make_phantom, miscalibrated, write_dicom_series, write_nifti


def infer(*args):
    return CliRunner().invoke(main, ["infer", *map(str, args), "--quiet"])


def test_both_conventions_are_reported_and_aerated_is_the_default_without_dense_lesions(tmp_path, model_2d):
    phantom = make_phantom((96, 96, 40), (3.0, 3.0, 3.5), seed=5, tumour=True)
    write_nifti(phantom, tmp_path / "scan.nii.gz")
    for name, extra in (("lungs", []), ("aerated", ["--aerated"])):
        result = infer(tmp_path / "scan.nii.gz", "-o", tmp_path / f"{name}.nii.gz", "--model", model_2d, *extra)
        assert result.exit_code == 0, result.output
    lungs = np.asarray(nib.load(tmp_path / "lungs.nii.gz").dataobj)
    aerated = np.asarray(nib.load(tmp_path / "aerated.nii.gz").dataobj)
    assert not (aerated & ~lungs.astype(bool)).any()  # aerated lies inside the lungs ...
    assert np.array_equal(aerated[aerated > 0], lungs[aerated > 0])  # ... with the same right/left labels
    for name, labels in (("lungs", lungs), ("aerated", aerated)):
        record = json.loads((tmp_path / f"{name}.json").read_text())
        conventions, unit = record["conventions"], voxel_ml(nib.load(tmp_path / f"{name}.nii.gz").affine)
        assert conventions["written"] == name and record["inference"]["convention"] == name
        assert record["volumes_ml"] == conventions[f"{name}_ml"] == measure(labels, record["labels"], unit)
        for key in ("right_lung", "left_lung", "total"):  # dense = lungs - aerated, never negative
            dense = conventions["lungs_ml"][key] - conventions["aerated_ml"][key]
            assert abs(conventions["dense_ml"][key] - dense) < 0.02 and dense >= 0


def test_statistics_in_the_sidecar_the_batch_csv_and_a_histogram(tmp_path, model_2d):
    scans = tmp_path / "scans"
    good = make_phantom((96, 96, 40), (3.0, 3.0, 3.5), seed=6)
    write_nifti(good, scans / "good.nii.gz")
    write_nifti(miscalibrated(good), scans / "shifted.nii.gz")
    result = infer(scans, "-o", tmp_path / "out", "--model", model_2d, "--preview")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "good.json").read_text())
    statistics = record["statistics"]
    assert statistics["convention"] == "lungs" and statistics["hu"] == "as stored"
    assert set(statistics["both"]) == {"whole", "upper", "middle", "lower", "anterior", "posterior"}
    assert abs(statistics["both"]["whole"]["volume_ml"] - record["volumes_ml"]["total"]) < 0.01
    assert (tmp_path / "out" / "good-histogram.png").stat().st_size > 5000
    refused = json.loads((tmp_path / "out" / "shifted.json").read_text())["statistics"]
    assert "miscalibrated" in refused["refused"] and "--recalibrate" in refused["refused"]
    rows = list(csv.DictReader((tmp_path / "out" / "statistics.csv").open()))
    assert len([r for r in rows if r["case"] == "good"]) == 3 * 6  # right, left, both x six regions
    assert [r["status"] for r in rows if r["case"] == "shifted"] == ["refused"]
    result = infer(scans / "shifted.nii.gz", "-o", tmp_path / "again.nii.gz", "--model", model_2d, "--recalibrate")
    assert result.exit_code == 0, result.output
    recalibrated = json.loads((tmp_path / "again.json").read_text())["statistics"]
    assert recalibrated["hu"] == "recalibrated" and any("recalibrated" in w for w in recalibrated["warnings"])
    mean = recalibrated["both"]["whole"]["mean_hu"]  # the phantom's lungs are -850 HU once air is -1000 again
    assert abs(mean - statistics["both"]["whole"]["mean_hu"]) < 40


def test_dicom_seg_and_rtstruct_beside_the_nifti_and_refused_for_a_volume_file(tmp_path, model_2d):
    phantom = make_phantom((64, 64, 24), (4.0, 4.0, 5.0), seed=7)
    write_dicom_series(phantom, tmp_path / "series", shuffle_names=True)
    result = infer(tmp_path / "series", "-o", tmp_path / "out", "--model", model_2d, "--output-type", "nifti",
                   "--output-type", "dicom-seg", "--output-type", "rtstruct", "--no-statistics")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "series.json").read_text())
    mask = np.asarray(nib.load(record["mask"]).dataobj)
    seg = pydicom.dcmread(record["dicom_seg"])
    assert seg.Modality == "SEG" and pydicom.dcmread(record["rtstruct"]).Modality == "RTSTRUCT"
    by_uid = {pydicom.dcmread(p).SOPInstanceUID: p for p in (tmp_path / "series").iterdir()}
    positions = {uid: float(pydicom.dcmread(p).ImagePositionPatient[2]) for uid, p in by_uid.items()}
    z = sorted(positions.values())
    frames = seg.pixel_array.reshape(-1, *seg.pixel_array.shape[-2:])
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        label = {1: "Right lung", 2: "Left lung"}
        name = seg.SegmentSequence[item.SegmentIdentificationSequence[0].ReferencedSegmentNumber - 1].SegmentLabel
        value = next(v for v, n in label.items() if n == name)
        k = z.index(positions[uid])  # the phantom writer's slices go up in z
        assert np.array_equal(frame.astype(bool), mask[:, :, k].T == value)
    write_nifti(phantom, tmp_path / "volume.nii.gz")
    result = infer(tmp_path / "volume.nii.gz", "-o", tmp_path / "v.nii.gz", "--model", model_2d,
                   "--output-type", "dicom-seg")
    assert result.exit_code == 1 and "needs a DICOM CT series as input" in result.output
    assert not (tmp_path / "v.nii.gz").exists() and not (tmp_path / "v-seg.dcm").exists()


def test_confidence_and_the_qc_page_of_a_batch(tmp_path, model_2d):
    scans = tmp_path / "scans"
    for seed in (8, 9):
        write_nifti(make_phantom((96, 96, 40), (3.0, 3.0, 3.5), seed=seed), scans / f"c{seed}.nii.gz")
    (scans / "broken.nii.gz").write_bytes(b"not a volume")
    result = infer(scans, "-o", tmp_path / "out", "--model", model_2d, "--tta", "--no-statistics")
    assert result.exit_code == 1
    confidence = json.loads((tmp_path / "out" / "c8.json").read_text())["confidence"]
    assert 0.9 < confidence["flip_dice"] <= 1 and 0 <= confidence["uncertain_fraction"] < 0.2
    page = (tmp_path / "out" / "report.html").read_text()
    for case in ("c8", "c9", "broken"):
        assert case in page
    assert page.index("broken") < page.index("c8")  # the failed case ranks first
