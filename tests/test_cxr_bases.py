"""Radiograph lung fields end at the diaphragm: the audit criteria (lungct.cxr.audit) and the base syntheses
(lungct.cxr.bases) on phantoms, the recipe keys that use them, and the criteria on the real references."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

import cxr_phantoms as P
from lungct.cxr import audit
from lungct.cxr.bases import GastricParams, PleuralFluidParams, add_gastric_bubble, add_pleural_fluid
from lungct.data import Case
from lungct.errors import LungctError
from lungct.io.radiograph import load_radiograph, read_cxr_mask
from lungct.recipes import chain_of, load_recipe
from lungct.sampling import SliceSampler, make_synthesis

SHAPE = (256, 256)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def cxr():
    phantom = P.make_cxr(SHAPE, seed=3)
    return phantom.image.astype(np.float32), phantom.lungs


def through_the_heart(lungs: np.ndarray) -> np.ndarray:
    """The phantom's mask with the left field drawn straight down through the heart's notch."""
    out = lungs.copy()
    out[P._ellipse(*SHAPE, (0.47 * SHAPE[0], 0.7 * SHAPE[1]), (0.26 * SHAPE[0], 0.12 * SHAPE[1]))] = 2
    return out


def left_base_row(lungs: np.ndarray) -> int:
    return int(np.nonzero(lungs == 2)[0].max())


# ------------------------------------------------------------------------------------------ audit


def test_heart_shadow_criterion_flags_a_field_drawn_through_the_heart(cxr):
    image, lungs = cxr
    assert audit.heart_shadow_excess(image, lungs) < 0.1
    assert audit.heart_shadow_excess(image, through_the_heart(lungs)) >= audit.HEART_SHADOW_THRESHOLD
    assert audit.heart_shadow_excess(image, (lungs == 1).astype(np.uint8)) is None  # one field: no verdict


def test_gastric_bubble_criterion_finds_air_under_the_left_dome_only(cxr):
    image, lungs = cxr
    assert audit.gastric_bubble_share(image, lungs) == 0.0
    with_bubble, under_right = image.copy(), image.copy()
    base = left_base_row(lungs)
    with_bubble[P._ellipse(*SHAPE, (base + 14, 0.72 * SHAPE[1]), (9, 16))] = 0.3
    under_right[P._ellipse(*SHAPE, (base + 14, 0.28 * SHAPE[1]), (9, 16))] = 0.3
    assert audit.gastric_bubble_share(with_bubble, lungs) >= audit.GASTRIC_BUBBLE_THRESHOLD
    assert audit.gastric_bubble_share(under_right, lungs) == 0.0


def test_beyond_base_measures_a_field_running_below_the_reference(cxr):
    _, lungs = cxr
    assert audit.beyond_base(lungs, lungs) == {"rows": 0.0, "area": 0.0}
    longer = lungs.copy()
    base = left_base_row(lungs)
    longer[base:base + 21, 170:190] = 2  # 20 rows below the left field's lowest row
    result = audit.beyond_base(longer, lungs)
    assert result["rows"] == pytest.approx(20 / SHAPE[0])
    assert result["area"] == pytest.approx(20 * 20 / (lungs > 0).sum())
    assert audit.beyond_base(lungs, longer)["rows"] == 0.0  # shorter than the reference is not beyond it


# ------------------------------------------------------------------------------------------ syntheses


def test_synthetic_gastric_bubble_is_air_under_the_left_dome_labelled_background(cxr):
    image, lungs = cxr
    before = lungs.copy()
    base = left_base_row(lungs)
    for seed in range(6):
        out = add_gastric_bubble(image, lungs, np.random.default_rng(seed), GastricParams(p_bowel=0.0))
        assert np.array_equal(lungs, before) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        darker = out < image - 0.03
        assert darker.sum() > 100  # a bubble, not a speck
        assert not (darker & ndi.binary_dilation(lungs > 0)).any()  # never on the lung: background stays background
        rows, cols = np.nonzero(darker)
        assert rows.min() > base - 40 and rows.max() <= base + 0.5 * SHAPE[0] * 0.3 + 40  # just under the dome
        assert cols.min() > SHAPE[1] // 2  # under the left dome: the viewer's right
        assert (out <= image + 1e-6).all()  # air only darkens


def test_gastric_bubble_is_seeded_and_needs_two_fields(cxr):
    image, lungs = cxr
    a, b = (add_gastric_bubble(image, lungs, np.random.default_rng(5)) for _ in range(2))
    assert np.array_equal(a, b)
    assert np.array_equal(add_gastric_bubble(image, (lungs == 1).astype(np.uint8), np.random.default_rng(5)), image)


def test_pleural_fluid_leaves_the_field_at_its_base_and_brightens_it(cxr):
    image, lungs = cxr
    for seed in range(6):
        out, mask = add_pleural_fluid(image, lungs, np.random.default_rng(seed), PleuralFluidParams(p_bilateral=0.5))
        removed = (lungs > 0) & (mask == 0)
        assert removed.sum() > 50 and not ((lungs == 0) & (mask > 0)).any()  # the field only loses its base
        for value in (1, 2):
            rows = np.nonzero(lungs == value)[0]
            lost = np.nonzero(removed & (lungs == value))[0]
            if len(lost):
                assert lost.min() > rows.min() + 0.5 * (rows.max() - rows.min())  # the lower half, never the apex
                # what is left of that field ends above the fluid
                assert np.nonzero(mask == value)[0].max() < rows.max()
        assert (out >= image - 1e-6).all() and out.max() <= 1  # fluid only brightens
        assert out[removed].mean() > image[removed].mean() + 0.2  # the fluid is as bright as soft tissue


# ------------------------------------------------------------------------------------------ recipe keys


def radiograph_case(name: str, lungs: np.ndarray, image: np.ndarray) -> Case:
    return Case(name, image[..., None], (lungs > 0).astype(np.uint8)[..., None], np.eye(4), None, None,
                {"original_shape": list(SHAPE)})


def test_case_weights_draw_a_film_more_often(cxr):
    image, lungs = cxr
    cases = [radiograph_case(name, lungs, image) for name in ("a", "b", "c", "d")]
    counts = {name: 0 for name in "abcd"}
    sampler = SliceSampler(cases, SHAPE, 0.0, 400, case_weights={"a": 5.0, "d": 0.0})
    for epoch in range(3):
        sampler.reshuffle(epoch)
        for case_index, _ in sampler.items:
            counts[cases[case_index].name] += 1
    assert counts["d"] == 0 and counts["a"] > 3 * counts["b"] and counts["a"] > 3 * counts["c"]
    plain = SliceSampler(cases, SHAPE, 0.0, 40)
    assert plain.weights is None and SliceSampler(cases, SHAPE, 0.0, 40, case_weights={}).items == plain.items


def test_recipe_synthesis_keys_reach_the_generators_and_typos_are_refused():
    recipe = load_recipe("cxr-2d", {"augment.gastric.prob": 0.3, "augment.pleural_fluid.prob": 0.1,
                                    "augment.opacities.params": {"p_effusion": 0.0},
                                    "augment.gastric.params": {"width": [0.3, 0.4]}})
    synthesis = make_synthesis(recipe, chain_of(recipe))
    assert synthesis.gastric_prob == 0.3 and synthesis.fluid_prob == 0.1
    assert synthesis.opacity_params.p_effusion == 0.0 and synthesis.gastric_params.width == (0.3, 0.4)
    assert make_synthesis(load_recipe("cxr-2d"), chain_of(load_recipe("cxr-2d"))) is None
    wrong = load_recipe("cxr-2d", {"augment.gastric.prob": 0.3, "augment.gastric.params": {"widht": [0.3, 0.4]}})
    with pytest.raises(LungctError, match="augment.gastric.params.widht.*width"):
        make_synthesis(wrong, chain_of(wrong))


# ------------------------------------------------------------------------------------------ real references


@pytest.fixture(scope="module")
def real_cxr() -> Path:
    if not (DATA / "cxr" / "heart-shadow-references").is_dir():
        pytest.skip(f"real data not available: {DATA / 'cxr'} (with heart-shadow-references/) is absent")
    return DATA / "cxr"


def excess(folder: Path, name: str) -> float | None:
    return audit.heart_shadow_excess(load_radiograph(folder / "images" / name).array,
                                     read_cxr_mask(folder / "masks" / name))


def test_heart_shadow_criterion_on_the_real_references(real_cxr):
    """The six references set apart by eye are all flagged; no validation reference is."""
    apart = real_cxr / "heart-shadow-references"
    assert all(excess(apart, p.name) >= audit.HEART_SHADOW_THRESHOLD for p in (apart / "images").glob("*.png"))
    validation = [line.split(",")[0] for line in (real_cxr / "splits.csv").read_text().splitlines()[1:]
                  if line.endswith(",validation")]
    assert len(validation) == 64
    assert max(excess(real_cxr, name) for name in validation) < audit.HEART_SHADOW_THRESHOLD


def test_the_bases_recipe_lists_are_what_the_criteria_give(real_cxr):
    """pipelines/cxr-bases-2d.yaml leaves out the training masks drawn through the heart shadow and weights the
    training films with a gastric bubble: exactly the criteria's verdicts (benchmarks/cxr_references.py)."""
    recipe = load_recipe("cxr-bases-2d")
    training = [line.split(",")[0] for line in (real_cxr / "splits.csv").read_text().splitlines()[1:]
                if line.endswith(",train")]
    flagged, bubbles = [], []
    for name in training:
        image, mask = load_radiograph(real_cxr / "images" / name).array, read_cxr_mask(real_cxr / "masks" / name)
        if (audit.heart_shadow_excess(image, mask) or 0) >= audit.HEART_SHADOW_THRESHOLD:
            flagged.append(Path(name).stem)
        elif audit.gastric_bubble_share(image, mask) >= audit.GASTRIC_BUBBLE_THRESHOLD:
            bubbles.append(Path(name).stem)
    assert sorted(recipe["data"]["exclude_cases"]) == sorted(flagged) and len(flagged) == 25
    assert sorted(recipe["data"]["case_weights"]) == sorted(bubbles) and len(bubbles) == 61
    heart = load_recipe("cxr-bases-heart-2d")["data"]["exclude_cases"]
    assert set(flagged) < set(heart) and all(isinstance(name, str) for name in heart)
