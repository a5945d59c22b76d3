"""The shipped CT model (`ct-lungs`) on the shared volumes: what `lungs` and `aerated` hold where a 2D network
alone goes wrong (issue #27). Lesions are painted by the benchmark's independent generator
(benchmarks/independent_lesions.py), not the model's training generator, on radiomics-lung2, a volume the
lesion decision never trained on; the negatives are lesion-free volumes. Each figure asserted here has its
measured value beside it (benchmarks/results/lesion-decision.md) and the 2D network alone's in brackets.

Skipped with a reason when ../shared/data is absent.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lesion_decision as benchmark  # noqa: E402
import independent_lesions as generator  # noqa: E402

from lungct.ct.segmenter import CTSegmenter  # noqa: E402
from lungct.evaluate import read_labels  # noqa: E402
from lungct.geometry import to_ras, voxel_ml, voxel_spacing  # noqa: E402
from lungct.io import Scan, load_scan  # noqa: E402
from lungct.metrics import overlap  # noqa: E402
from lungct.morphology import dilate_mm  # noqa: E402

CENTRAL = ("hilar", "mediastinal", "anterior_junction", "azygo_oesophageal")


@pytest.fixture(scope="module")
def segmenter():
    return CTSegmenter.load("ct-lungs", statistics=False)


def conventions(segmenter: CTSegmenter, scan: Scan) -> tuple[np.ndarray, np.ndarray]:
    result = segmenter.segment(scan).conventions
    return result.lungs > 0, result.aerated > 0


@pytest.fixture(scope="module")
def lung2(shared_data):
    """radiomics-lung2 with its lungs (classical chain) and the zone its real tumour keeps clear."""
    scan, sides, tumour = benchmark.host("radiomics-lung2", benchmark.HOSTS)
    return scan, sides, dilate_mm(tumour, benchmark.TUMOUR_CLEARANCE_MM, voxel_spacing(scan.affine))


@pytest.mark.parametrize("family", CENTRAL)
def test_a_central_tumour_is_kept_in_lungs_and_left_out_of_aerated(segmenter, lung2, family):
    scan, sides, keep_clear = lung2
    host = list(benchmark.HOSTS).index("radiomics-lung2")
    index = list(generator.EVAL_FAMILIES).index(family)
    case, lesion = benchmark.painted(scan, sides, keep_clear, family,
                                     np.random.default_rng([benchmark.SEED, host, index, 0]))
    assert lesion is not None, f"{family}: the generator found no seat"
    lungs, aerated = conventions(segmenter, Scan(f"lung2+{family}", case.hu, scan.affine, [], "memory"))
    inside, in_aerated = lungs[lesion.voxels].mean(), aerated[lesion.voxels].mean()
    assert inside >= 0.85, f"{family}: {inside:.1%} of the lesion inside lungs"
    assert in_aerated <= 0.15, f"{family}: {in_aerated:.1%} of the lesion inside aerated"


def test_a_normal_hilum_is_left_out(segmenter, shared_data):
    """imlab-id001 (lesion-free, 5 mm slices): the dense part is 7.8 mL [2D alone: 81 mL], soft tissue in
    `lungs` beyond the reference 2.0 mL [15.7 mL], and `lungs` is as good as `aerated` against it."""
    folder = shared_data / "ct-volumes" / "imlab-id001"
    scan = load_scan(folder / "image.nii.gz")
    truth = read_labels(folder / "lungs.nii.gz")[0] > 0
    lungs, aerated = conventions(segmenter, scan)
    unit = voxel_ml(scan.affine)
    assert (lungs & ~aerated).sum() * unit <= 30
    assert (lungs & ~truth & (scan.array > -100)).sum() * unit <= 6
    assert overlap(lungs, truth)["dice"] >= overlap(aerated, truth)["dice"] - 0.003


def soft_tissue_at_the_base_ml(segmenter: CTSegmenter, scan: Scan) -> float:
    """mL of soft tissue (above -100 HU) in the lowest fifth of `lungs`: where a dome taken for lung lies."""
    lungs, _ = conventions(segmenter, scan)
    lungs_ras, hu_ras = to_ras(lungs.astype(np.uint8), scan.affine)[0] > 0, to_ras(scan.array, scan.affine)[0]
    slices = np.flatnonzero(lungs_ras.any(axis=(0, 1)))
    lowest = slices[0] + int(0.2 * (slices[-1] - slices[0]))
    base = lungs_ras[:, :, :lowest + 1] & (hu_ras[:, :, :lowest + 1] > -100)
    return float(base.sum() * voxel_ml(scan.affine))


def test_the_domes_under_the_lung_bases_stay_out_on_thick_slices(segmenter, shared_data):
    """imlab-id001 (5 mm slices): 2.8 mL [13.1 mL]."""
    scan = load_scan(shared_data / "ct-volumes" / "imlab-id001" / "image.nii.gz")
    assert voxel_spacing(scan.affine)[2] >= 4.5
    assert soft_tissue_at_the_base_ml(segmenter, scan) <= 6


@pytest.mark.xfail(strict=True, reason="known limit of ct-lungs 0.2.0 (#27): on radiomics-lung1 (5 mm slices, "
                                       "never a training host) parts of the liver and spleen domes are called "
                                       "lesion: 31 mL of soft tissue at the base [2D alone 10.5 mL]")
def test_the_domes_stay_out_on_an_unseen_thick_slice_scan(segmenter, shared_data):
    scan = load_scan(shared_data / "ct-volumes" / "radiomics-lung1" / "image.nrrd")
    assert soft_tissue_at_the_base_ml(segmenter, scan) <= 10


def painted_effusion(name: str, hosts: dict, seed: int):
    """A gravity-level pleural effusion painted into a shared volume: (the scan with it, its fluid)."""
    scan, sides, _ = benchmark.host(name, hosts)
    case = generator.NativeCase(scan.array, sides, scan.affine)
    effusion = generator.paint(case, "effusion", np.random.default_rng([benchmark.SEED, seed]))
    assert effusion is not None
    return Scan(f"{name}+effusion", case.hu, scan.affine, [], "memory"), effusion.voxels


def test_a_smaller_effusion_is_left_out_of_both(segmenter, shared_data):
    """copdgene-ct64, 60 mL of fluid layered at the back: 7.5 % inside `lungs`, 2.7 % inside `aerated`."""
    scan, fluid = painted_effusion("copdgene-ct64", benchmark.TUNE_HOSTS, 7)
    lungs, aerated = conventions(segmenter, scan)
    assert lungs[fluid].mean() <= 0.15
    assert aerated[fluid].mean() <= 0.05


def test_a_larger_effusion_leaves_aerated(segmenter, shared_data):
    """imlab-id002 (never a training host), 94 mL of fluid: 7.0 % of it inside `aerated`."""
    scan, fluid = painted_effusion("imlab-id002", benchmark.HOSTS, 7)
    _, aerated = conventions(segmenter, scan)
    assert aerated[fluid].mean() <= 0.10


@pytest.mark.xfail(strict=True, reason="known limit of ct-lungs 0.2.0 (#27): about half of a larger painted "
                                       "effusion is called lesion and kept in `lungs` (53 % here, 55.5 % on "
                                       "the benchmark)")
def test_a_larger_effusion_leaves_lungs(segmenter, shared_data):
    scan, fluid = painted_effusion("imlab-id002", benchmark.HOSTS, 7)
    lungs, _ = conventions(segmenter, scan)
    assert lungs[fluid].mean() <= 0.15
