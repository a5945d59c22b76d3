"""Radiographs: reading every encoding of one phantom to the same image, modality refusals, the 256 x 256
chain, the way back to the original pixels, post-processing, right/left, areas, training pairs, real data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cxr_phantoms as P
from lungct.cxr.dataset import cxr_pairs
from lungct.io.radiograph import read_cxr_mask
from lungct.cxr.postprocess import field_areas_cm2, finish_cxr, postprocess_cxr, split_fields
from lungct.cxr.segmenter import write_png
from lungct.cxr.transforms import (EqualiseHistogramd, LocalContrastNormalised, ResizePadd, ScaleGreyd,
                                   nearest_resize, to_original)
from lungct.errors import LungctError
from lungct.io import discover
from lungct.io.discover import CT_REFUSAL
from lungct.io.radiograph import CT_VOLUME_REFUSAL, Radiograph, load_radiograph
from lungct.recipes import Chain, chain_of, load_recipe


def detect_modality(path: Path) -> str | None:
    """The modality discovery gives a file or folder (None when it holds no case lungct takes)."""
    try:
        kinds = {c.modality for c in discover([path]) if not c.problem}
    except LungctError:  # not a file lungct reads at all
        return None
    return kinds.pop() if len(kinds) == 1 else None


def prepare_cxr(radiograph, recipe="cxr-2d", mask=None):
    """The radiograph recipe's chain on an image (and mask), as training and inference run it."""
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    data = {"image": radiograph.array[None].astype(np.float32),
            "case": {"spacing_mm": radiograph.spacing_mm, "patient_right_on_image_left": True}}
    if mask is not None:
        data["mask"] = mask[None].astype(np.uint8)
    out = Chain.of(recipe)(data)
    image = np.asarray(out["image"], dtype=np.float32)[0]
    if mask is None:
        return image, out["case"]
    return image, np.asarray(out["mask"], dtype=np.uint8)[0], out["case"]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def phantom() -> P.CxrPhantom:
    return P.make_cxr((240, 200), seed=1)


def unit(array: np.ndarray) -> np.ndarray:
    """What ScaleGreyd does: min-max to [0, 1]."""
    return ScaleGreyd()({"image": array})["image"][0]


# ------------------------------------------------------------------------------------------ reading


def test_png_8bit_16bit_rgb_and_tiff_read_as_the_same_grey_image(tmp_path, phantom):
    eight = load_radiograph(P.write_png8(tmp_path / "a.png", phantom.image))
    sixteen = load_radiograph(P.write_png16(tmp_path / "b.png", phantom.image))
    rgb = load_radiograph(P.write_rgb(tmp_path / "c.png", phantom.image))
    rgba = load_radiograph(P.write_rgb(tmp_path / "d.png", phantom.image, alpha=True))
    tiff = load_radiograph(P.write_png16(tmp_path / "e.tif", phantom.image))
    assert eight.array.dtype == np.float32 and eight.array.shape == phantom.image.shape
    assert eight.photometric["bits"] == 8 and sixteen.photometric["bits"] == 16
    assert float(sixteen.array.max()) > 255  # full 16-bit depth kept, not cut to 8 bits
    assert np.abs(unit(sixteen.array) - phantom.image / phantom.image.max()).max() < 1e-3
    assert np.abs(unit(eight.array) - unit(sixteen.array)).max() <= 1 / 255 + 1e-4
    assert np.allclose(rgb.array, eight.array, atol=1e-3) and np.allclose(rgba.array, eight.array, atol=1e-3)
    assert np.array_equal(tiff.array, sixteen.array)
    assert not rgb.warnings and eight.spacing_mm is None and eight.original_shape == (240, 200)


def test_colour_picture_is_made_grey_with_a_warning(tmp_path, phantom):
    tinted = load_radiograph(P.write_rgb(tmp_path / "t.png", phantom.image, tint=(1.0, 0.8, 0.6)))
    assert tinted.array.ndim == 2 and any("colour image" in w for w in tinted.warnings)


def test_jpeg_reads_close_to_the_phantom(tmp_path, phantom):
    from PIL import Image

    Image.fromarray(np.round(phantom.image * 255).astype(np.uint8)).save(tmp_path / "a.jpg", quality=95)
    jpeg = load_radiograph(tmp_path / "a.jpg")
    assert np.corrcoef(jpeg.array.ravel(), phantom.image.ravel())[0, 1] > 0.99


def test_dicom_monochrome1_and_monochrome2_give_the_same_image(tmp_path, phantom):
    two = load_radiograph(P.write_dicom_radiograph(tmp_path / "m2.dcm", phantom.image, monochrome=2))
    one = load_radiograph(P.write_dicom_radiograph(tmp_path / "m1.dcm", phantom.image, monochrome=1))
    png = load_radiograph(P.write_png16(tmp_path / "p.png", phantom.image))
    assert one.photometric["inverted"] and not two.photometric["inverted"]
    assert np.allclose(unit(one.array), unit(two.array), atol=1e-6)
    assert np.abs(unit(two.array) - unit(png.array)).max() < 1 / 4095 + 1e-4
    # inversion is right, not merely consistent: lungs darker than the mediastinum in both
    for radiograph in (one, two):
        assert radiograph.array[phantom.lungs > 0].mean() < radiograph.array[phantom.image > 0.7].mean()
    assert two.spacing_mm == (0.4, 0.4) and two.photometric["modality"] == "DX"


def test_dicom_rescale_window_and_voi_lut_are_applied(tmp_path, phantom):
    plain = unit(load_radiograph(P.write_dicom_radiograph(tmp_path / "p.dcm", phantom.image)).array)
    rescaled = load_radiograph(P.write_dicom_radiograph(tmp_path / "r.dcm", phantom.image, rescale=(2.0, -100.0)))
    assert np.allclose(unit(rescaled.array), plain, atol=1e-3)  # slope 2 halves the stored precision
    # window centre 2048 width 1024: everything below 1536 black, above 2560 white
    windowed = load_radiograph(P.write_dicom_radiograph(tmp_path / "w.dcm", phantom.image, window=(2048, 1024)))
    stored = P.stored_values(phantom.image).astype(float)
    expected = np.clip((stored - 1536) / 1024, 0, 1)
    assert windowed.photometric["voi"].startswith("window")
    assert np.abs(unit(windowed.array) - expected).max() < 0.01
    # a VOI LUT (square root) replaces the window
    lut = np.round(np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16)
    with_lut = load_radiograph(P.write_dicom_radiograph(tmp_path / "l.dcm", phantom.image, voi_lut=lut,
                                                        window=(2048, 1024)))
    assert with_lut.photometric["voi"] == "VOI LUT sequence"
    assert np.allclose(with_lut.array, lut[stored.astype(int)].astype(np.float32))
    # MONOCHROME1 with a window: the window applies to stored values, then the display is inverted
    inverted = load_radiograph(P.write_dicom_radiograph(tmp_path / "iw.dcm", phantom.image, monochrome=1,
                                                        window=(2047, 1024)))
    assert np.abs(unit(inverted.array) - expected).max() < 0.01


def test_compressed_dicom_radiograph_and_the_gdcm_fallback(tmp_path, monkeypatch):
    import pydicom
    import SimpleITK as sitk

    phantom = P.make_cxr((120, 100), seed=3)
    stored = P.stored_values(phantom.image)
    image = sitk.GetImageFromArray(stored)
    image.SetMetaData("0008|0060", "DX")
    path = tmp_path / "jpeg-lossless.dcm"
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.SetImageIO("GDCMImageIO")
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG")
    writer.Execute(image)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(load_radiograph(path).array, stored.astype(np.float32))

    def no_decoder(self):
        raise NotImplementedError("no pixel data handler for this transfer syntax")

    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(no_decoder))
    fallback = load_radiograph(path)
    assert np.array_equal(fallback.array, stored.astype(np.float32))
    assert any("decoded with GDCM" in w for w in fallback.warnings)


def test_dicom_spacing_from_imager_spacing_and_magnification(tmp_path, phantom):
    image = phantom.image
    imager = load_radiograph(P.write_dicom_radiograph(tmp_path / "i.dcm", image, spacing=None,
                                                      imager_spacing=(0.2, 0.2), magnification=1.25))
    assert imager.spacing_mm == pytest.approx((0.16, 0.16))
    none = load_radiograph(P.write_dicom_radiograph(tmp_path / "n.dcm", image, spacing=None))
    assert none.spacing_mm is None
    given = load_radiograph(P.write_png8(tmp_path / "g.png", image), spacing_mm=0.5)
    assert given.spacing_mm == (0.5, 0.5)
    cr = load_radiograph(P.write_dicom_radiograph(tmp_path / "cr.dcm", image, modality="CR", sop_class=P.CR_SOP))
    assert cr.photometric["modality"] == "CR"


def test_mirrored_dicom_swaps_right_and_left(tmp_path, phantom):
    mirrored = load_radiograph(P.write_dicom_radiograph(tmp_path / "m.dcm", phantom.image, patient_orientation=("R", "F")))
    standard = load_radiograph(P.write_dicom_radiograph(tmp_path / "s.dcm", phantom.image, patient_orientation=("L", "F")))
    assert standard.patient_right_on_image_left and not mirrored.patient_right_on_image_left
    labels = split_fields(phantom.mask, mirrored.patient_right_on_image_left)
    assert np.array_equal(labels == 1, phantom.lungs == 2) and np.array_equal(labels == 2, phantom.lungs == 1)


# ------------------------------------------------------------------------------- modality and refusals


def test_modality_detection(tmp_path, phantom):
    assert detect_modality(P.write_png8(tmp_path / "a.png", phantom.image)) == "cxr"
    assert detect_modality(P.write_dicom_radiograph(tmp_path / "dx.dcm", phantom.image)) == "cxr"
    assert detect_modality(P.write_dicom_radiograph(tmp_path / "cr.dcm", phantom.image, modality="CR",
                                                    sop_class=P.CR_SOP)) == "cxr"
    assert detect_modality(P.write_dicom_radiograph(tmp_path / "nomod.dcm", phantom.image, with_modality=False)) == "cxr"
    assert detect_modality(P.write_dicom_ct_slice(tmp_path / "ct.dcm")) == "ct"
    assert detect_modality(P.write_ct_nifti(tmp_path / "ct.nii.gz")) == "ct"
    assert detect_modality(P.write_dicom_radiograph(tmp_path / "mg.dcm", phantom.image, modality="MG",
                                                    sop_class=P.MG_SOP)) is None
    (tmp_path / "notes.txt").write_text("hello")
    assert detect_modality(tmp_path / "notes.txt") is None
    folder = tmp_path / "pictures"
    folder.mkdir()
    P.write_png8(folder / "x.png", phantom.image)
    assert detect_modality(folder) == "cxr"


def test_ct_given_to_the_radiograph_path_is_refused(tmp_path):
    for path in (P.write_ct_nifti(tmp_path / "ct.nii.gz"), P.write_dicom_ct_slice(tmp_path / "ct.dcm")):
        with pytest.raises(LungctError) as err:
            load_radiograph(path)
        assert str(err.value) == f"{path}: {CT_VOLUME_REFUSAL}"
        assert discover([path])[0].refusal("cxr") == CT_REFUSAL
    with pytest.raises(LungctError, match="is a folder"):
        load_radiograph(tmp_path)


def test_radiograph_given_to_the_ct_path_is_refused_consistently(tmp_path, phantom):
    from lungct.io import load_scan

    png = P.write_png8(tmp_path / "a.png", phantom.image)
    dx = P.write_dicom_radiograph(tmp_path / "dx.dcm", phantom.image)
    with pytest.raises(LungctError, match=r"is a 2D picture \(PNG\), not a CT scan"):
        load_scan(png)
    with pytest.raises(LungctError, match=r"DX \(a radiograph\)"):
        load_scan(dx)
    assert discover([png])[0].refusal("cxr") is None and discover([dx])[0].refusal("cxr") is None


def test_bad_files_are_refused_with_one_line(tmp_path, phantom):
    cases = {}
    (tmp_path / "empty.png").write_bytes(b"")
    cases["empty.png"] = "file is empty"
    good = P.write_png8(tmp_path / "good.png", phantom.image).read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    cases["cut.png"] = "truncated or corrupt"
    (tmp_path / "text.png").write_text("not a picture at all")
    cases["text.png"] = "cannot read PNG file: not a valid image"
    (tmp_path / "data.bin").write_bytes(b"\x00\x01" * 100)
    cases["data.bin"] = "not a recognised image or scan"
    P.write_png8(tmp_path / "flat.png", np.full((64, 64), 0.5))
    cases["flat.png"] = "image is uniform"
    P.write_png8(tmp_path / "tiny.png", np.random.default_rng(0).random((8, 8)))
    cases["tiny.png"] = "too small to be a radiograph"
    P.write_dicom_radiograph(tmp_path / "mg.dcm", phantom.image, modality="MG", sop_class=P.MG_SOP)
    cases["mg.dcm"] = "a mammogram"
    cases["missing.png"] = "no such file"
    for name, reason in cases.items():
        with pytest.raises(LungctError) as err:
            load_radiograph(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: ") and reason in str(err.value), str(err.value)
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------- the chain


def test_recipe_chain_gives_256_in_unit_range_and_steps_are_settable(phantom):
    recipe = load_recipe("cxr-2d")
    assert recipe["modality"] == "cxr" and recipe["labels"] == {"background": 0, "lungs": 1}
    assert [t["name"] for t in chain_of(recipe)] == ["ScaleGreyd", "ResizePadd", "EqualiseHistogramd",
                                                     "LocalContrastNormalised"]
    image, record = prepare_cxr(load_radiograph_from(phantom.image), recipe)
    assert image.shape == (256, 256) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
    assert record["resize"] == {"original_shape": [240, 200], "resized_shape": [256, 213], "size": [256, 256],
                                "pad": [[0, 0], [21, 22]]}
    clahe = load_recipe("cxr-2d", {"EqualiseHistogramd.method": "clahe", "LocalContrastNormalised.to_unit": False})
    other, _ = prepare_cxr(load_radiograph_from(phantom.image), clahe)
    assert other.shape == (256, 256) and not np.allclose(other, image)
    for variant in ("cxr-2d-unet32", "cxr-2d-segnet", "cxr-2d-segnet-sgd", "cxr-2d-resunet50"):
        loaded = load_recipe(variant)
        Chain.of(loaded)
        assert loaded["modality"] == "cxr" and chain_of(loaded) == chain_of(recipe)
    assert load_recipe("cxr-2d-resunet50")["optimizer"] == {"name": "sgd", "lr": 0.001, "momentum": 0.9,
                                                           "weight_decay": 0.0001, "nesterov": False}
    assert load_recipe("cxr-2d-unet32")["network"]["args"]["channels"] == [32, 64, 128, 256, 512]


def load_radiograph_from(image: np.ndarray):
    return Radiograph(image.astype(np.float32), None, Path("phantom.png"), image.shape)


def test_histogram_equalisation_ignores_padding_and_flattens_the_histogram(phantom):
    data = ResizePadd(size=(256, 256))({"image": phantom.image[None].astype(np.float32)})
    out = EqualiseHistogramd()(data)["image"][0]
    (top, bottom), (left, right) = data["case"]["resize"]["pad"]
    inner = out[top:256 - bottom, left:256 - right]
    assert np.all(out[:, :left] == 0) and np.all(out[:, 256 - right:] == 0)
    assert abs(np.mean(inner < 0.5) - 0.5) < 0.05  # equalised: half the pixels below mid-grey
    alone = EqualiseHistogramd()({"image": data["image"][:, top:256 - bottom, left:256 - right]})["image"][0]
    assert np.allclose(alone, inner, atol=1e-6)  # the padding did not enter the histogram
    clahe = EqualiseHistogramd(method="clahe", clip_limit=0.02)(data)["image"][0]
    assert clahe.min() >= 0 and clahe.max() <= 1 and np.all(clahe[:, :left] == 0)


def test_local_contrast_normalisation_removes_a_smooth_illumination_gradient(phantom):
    ramp = np.linspace(0, 0.6, phantom.image.shape[1])[None, :] * np.ones_like(phantom.image)
    lcn = LocalContrastNormalised(sigma=8.0, to_unit=False)
    flat = lcn({"image": phantom.image[None]})["image"][0]
    lit = lcn({"image": (phantom.image + ramp)[None]})["image"][0]
    assert np.abs(flat - lit)[20:-20, 20:-20].mean() < 0.05 * np.abs(flat).mean()
    in_unit = LocalContrastNormalised(sigma=8.0)({"image": phantom.image[None]})["image"][0]
    assert 0 <= in_unit.min() and in_unit.max() <= 1


# --------------------------------------------------------------------------------------- the way back


@pytest.mark.parametrize("shape", [(512, 384), (768, 1024), (128, 96), (256, 256)])
def test_mask_round_trip_is_exact_on_integer_ratios(shape):
    size = (256, 256)
    scale = min(size[0] / shape[0], size[1] / shape[1])
    coarse_shape = (round(shape[0] * scale), round(shape[1] * scale))
    rng = np.random.default_rng(0)
    # a label image that is piecewise constant on the coarse grid, so nearest resizing can be exact
    coarse = (rng.random(coarse_shape) > 0.5).astype(np.uint8) * rng.integers(1, 3, coarse_shape).astype(np.uint8)
    mask = nearest_resize(coarse, shape) if shape[0] >= coarse_shape[0] else coarse[::2, ::2]
    assert mask.shape == shape
    data = ResizePadd(size=size)({"image": np.zeros((1, *shape), np.float32), "mask": mask[None]})
    assert data["mask"].shape == (1, 256, 256) and data["image"].shape == (1, 256, 256)
    back = to_original(data["mask"][0], data["case"])
    assert back.shape == shape and back.dtype == mask.dtype and np.array_equal(back, mask)


@pytest.mark.parametrize("shape", [(300, 217), (181, 333), (1000, 823)])
def test_mask_round_trip_on_any_size_keeps_dice_above_0_99(shape):
    phantom = P.make_cxr(shape, seed=2)
    image, mask_256, record = prepare_cxr(load_radiograph_from(phantom.image), mask=phantom.mask)
    assert image.shape == mask_256.shape == (256, 256) and set(np.unique(mask_256)) == {0, 1}
    back = to_original(mask_256, record)
    assert back.shape == shape and P.dice(back, phantom.mask) > 0.99
    smooth = to_original(mask_256.astype(np.float32), record, nearest=False) >= 0.5
    assert P.dice(smooth, phantom.mask) > 0.99


def test_finish_cxr_returns_right_left_labels_and_areas_at_the_original_size(phantom):
    radiograph = Radiograph(phantom.image.astype(np.float32), (0.5, 0.4), Path("p.png"), phantom.image.shape)
    _, mask_256, record = prepare_cxr(radiograph, mask=phantom.mask)
    probability = mask_256 * 0.9 + 0.05
    result = finish_cxr(probability, record)
    assert result.mask.shape == phantom.image.shape and result.labels is not None
    assert P.dice(result.labels == 1, phantom.lungs == 1) > 0.98 and P.dice(result.labels == 2, phantom.lungs == 2) > 0.98
    expected = {"right_lung": (phantom.lungs == 1).sum() * 0.002, "left_lung": (phantom.lungs == 2).sum() * 0.002}
    assert result.areas_cm2["right_lung"] == pytest.approx(expected["right_lung"], rel=0.03)
    assert result.areas_cm2["left_lung"] == pytest.approx(expected["left_lung"], rel=0.03)
    assert result.areas_cm2["total"] == pytest.approx(result.areas_cm2["right_lung"] + result.areas_cm2["left_lung"], abs=0.02)
    no_spacing = finish_cxr(probability, {**record, "spacing_mm": None})
    assert no_spacing.areas_cm2 is None


# ---------------------------------------------------------------------------------- post-processing


def test_postprocess_keeps_two_largest_components_and_fills_holes(phantom):
    noisy = phantom.mask.copy()
    noisy[100:106, 60:66] = 0  # a hole in the right lung (a vessel or nodule)
    noisy[5:9, 5:9] = 1  # a fragment outside the body
    noisy[220:230, 95:105] = 1  # a larger fragment below
    out = postprocess_cxr(noisy.astype(np.float32) * 0.8)
    assert out.dtype == np.uint8 and np.array_equal(out, phantom.mask)
    # a lung that is mostly lost still counts; a speck next to one lung does not
    one_lung = (phantom.lungs == 1).astype(np.uint8)
    one_lung[50:52, 150:152] = 1
    assert np.array_equal(postprocess_cxr(one_lung), (phantom.lungs == 1).astype(np.uint8))
    assert not postprocess_cxr(np.zeros((32, 32))).any()
    # probabilities are thresholded; labels 1/2 count as lung
    assert np.array_equal(postprocess_cxr(phantom.lungs), phantom.mask)
    assert np.array_equal(postprocess_cxr(phantom.mask * 0.45, threshold=0.5), np.zeros_like(phantom.mask))


def test_a_piece_below_a_field_is_not_the_other_lung(phantom):
    left = (phantom.lungs == 2).astype(np.uint8)
    rows = np.nonzero(left.any(1))[0]
    bubble = np.zeros_like(left)
    bubble[rows[-1] + 8:rows[-1] + 20, 130:160] = 1  # gas under the left hemidiaphragm, the right field missed
    assert np.array_equal(postprocess_cxr(left | bubble), left)
    both = phantom.mask | bubble
    assert np.array_equal(postprocess_cxr(both), phantom.mask)


def test_split_fields_labels_right_lung_on_the_viewers_left(phantom):
    labels = split_fields(phantom.mask)
    assert np.array_equal(labels, phantom.lungs)
    assert np.nonzero(labels == 1)[1].mean() < np.nonzero(labels == 2)[1].mean()
    fused = phantom.mask.copy()
    fused[100:110, :] = np.maximum(fused[100:110, :], (np.arange(fused.shape[1]) > 30) & (np.arange(fused.shape[1]) < 170))
    assert split_fields(fused) is None  # one fused field: not separable
    stacked = np.zeros((100, 100), np.uint8)
    stacked[10:40, 20:60] = 1
    stacked[50:90, 25:65] = 1
    assert split_fields(stacked) is None  # two pieces of one lung, one above the other


def test_field_areas_need_spacing():
    mask = np.zeros((10, 20), np.uint8)
    mask[:, :5], mask[:, 10:18] = 1, 2
    assert field_areas_cm2(mask, (2.0, 1.0)) == {"right_lung": 1.0, "left_lung": 1.6, "total": 2.6}
    assert field_areas_cm2(mask > 0, 1.0) == {"lungs": 1.3, "total": 1.3}
    assert field_areas_cm2(mask, None) is None


def test_write_png_masks(tmp_path, phantom):
    binary = write_png(tmp_path / "m.png", phantom.mask * 255)
    assert np.array_equal(read_cxr_mask(binary), phantom.mask)
    from PIL import Image

    assert set(np.unique(np.asarray(Image.open(binary)))) == {0, 255}
    labelled = write_png(tmp_path / "l.png", phantom.lungs)
    assert np.array_equal(np.asarray(Image.open(labelled)), phantom.lungs)
    assert not list(tmp_path.glob(".*tmp*"))


# ------------------------------------------------------------------------------------ training pairs


@pytest.fixture()
def pair_folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for i in range(4):
        phantom = P.make_cxr((200 + 20 * i, 180), seed=i)
        P.write_png8(images / f"case{i}.png", phantom.image)
        P.write_mask_png(masks / (f"case{i}.png" if i != 3 else f"case{i}_mask.png"), phantom.mask, 255 if i else 1)
    (tmp_path / "splits.csv").write_text("file,dataset,split\ncase0.png,a,train\ncase1.png,a,validation\n"
                                         "case2.png,b,train\ncase3.png,b,train\n")
    return images, masks, tmp_path / "splits.csv"


def test_cxr_pairs_match_images_to_masks_and_follow_the_split_file(pair_folders):
    images, masks, splits = pair_folders
    pairs = cxr_pairs(images, masks)
    assert [p[0] for p in pairs] == ["case0", "case1", "case2", "case3"]
    assert pairs[3][2].name == "case3_mask.png"
    assert [p[0] for p in cxr_pairs(images, masks, splits, "train")] == ["case0", "case2", "case3"]
    assert [p[0] for p in cxr_pairs(images, masks, splits, "validation")] == ["case1"]
    from lungct.training import training_data

    def split(**overrides):
        train, validation, _ = training_data(load_recipe("cxr-2d", overrides), None, images, masks, progress=False)
        return [c.name for c in train], [c.name for c in validation]

    assert split() == (["case0", "case2", "case3"], ["case1"])  # splits.csv beside the images folder
    # exclude_cases leaves training only; validation stays whole, with or without a split file
    assert split(**{"data.exclude_cases": ["case2", "case1"]}) == (["case0", "case3"], ["case1"])
    assert split(**{"data.exclude_cases": ["case2"], "data.split_file": "none", "data.validation_cases": ["case0"],
                    "data.validation_fraction": 0}) == (["case1", "case3"], ["case0"])
    with pytest.raises(LungctError, match="1666311 is not a string: quote"):  # YAML read 16663_1_1 as a number
        split(**{"data.case_weights": {1666311: 2.0}})
    train, _, _ = training_data(load_recipe("cxr-2d"), None, images, masks, progress=False)
    image, mask = train[0].image[..., 0], train[0].labels[..., 0]
    assert image.shape == mask.shape == (256, 256) and image.dtype == np.float32 and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1} and 0 <= image.min() and image.max() <= 1
    with pytest.raises(LungctError, match="no image is in split 'test'"):
        cxr_pairs(images, masks, splits, "test")


def test_cxr_pairs_refusals(pair_folders, tmp_path):
    images, masks, splits = pair_folders
    P.write_png8(images / "lonely.png", P.make_cxr((64, 64)).image)
    with pytest.raises(LungctError, match=r"lonely.png: has no mask in .*masks"):
        cxr_pairs(images, masks)
    (images / "lonely.png").unlink()
    P.write_mask_png(masks / "case0.png", np.ones((100, 100)))
    with pytest.raises(LungctError, match=r"case0.png: mask is 100x100 \(rows x cols\) but its image case0.png is 200x180"):
        cxr_pairs(images, masks)
    P.write_png8(masks / "case0.png", np.random.default_rng(0).random((200, 180)))
    with pytest.raises(LungctError, match=r"case0.png: mask values must be \{0, 1\} or \{0, 255\}"):
        cxr_pairs(images, masks)
    splits.write_text("file,dataset,split\nghost.png,a,train\n")
    with pytest.raises(LungctError, match="names 1 image"):
        cxr_pairs(images, masks, splits, "train")


# ---------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_cxr() -> Path:
    if not (DATA / "cxr").is_dir():
        pytest.skip(f"real data not available: {DATA / 'cxr'} is absent (../shared/data from the repository root)")
    return DATA / "cxr"


def test_real_radiographs_masks_and_split(real_cxr):
    train = cxr_pairs(real_cxr / "images", real_cxr / "masks", real_cxr / "splits.csv", "train", check_values=False)
    validation = cxr_pairs(real_cxr / "images", real_cxr / "masks", real_cxr / "splits.csv", "validation",
                           check_values=False)
    # 556 films: the six validation references that draw the heart shadow sit apart (shared data README)
    assert len(train) + len(validation) == 556 and len(validation) == 64
    assert not {p[0] for p in train} & {p[0] for p in validation}
    apart = {p.stem for p in (real_cxr / "heart-shadow-references").rglob("*.png")}
    assert {"CHNCXR_0002_0", "CHNCXR_0297_0"} <= apart and not apart & {p[0] for p in train + validation}
    for name, image_path, mask_path in validation[::10]:
        radiograph = load_radiograph(image_path)
        assert radiograph.array.shape == (256, 256) and radiograph.photometric["bits"] == 8
        image, mask, _ = prepare_cxr(radiograph, mask=read_cxr_mask(mask_path))
        reference = read_cxr_mask(mask_path)
        assert np.array_equal(mask, reference)  # 256 x 256 already: the mask is untouched
        assert 0 <= image.min() and image.max() <= 1
        labels = split_fields(postprocess_cxr(reference))
        assert labels is not None, name
        assert np.nonzero(labels == 1)[1].mean() < np.nonzero(labels == 2)[1].mean()
        # not inverted: the lung fields are darker than the mediastinum and heart between them
        rows, cols = np.nonzero(reference)
        box = np.zeros_like(reference, bool)
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert radiograph.array[reference > 0].mean() < radiograph.array[box & (reference == 0)].mean(), name


def test_real_ct_files_are_refused_by_the_radiograph_reader():
    slices = DATA / "dicom-slices"
    if not slices.is_dir():
        pytest.skip(f"real data not available: {slices} is absent (../shared/data from the repository root)")
    for path in (slices / "wg04-unc.dcm", DATA / "ct-slices" / "images"):
        assert detect_modality(path) == "ct"
    with pytest.raises(LungctError, match="is a CT volume, not a radiograph"):
        load_radiograph(slices / "wg04-unc.dcm")
    nifti = sorted((DATA / "ct-slices" / "images").glob("*.nii.gz"))[0]
    with pytest.raises(LungctError, match="is a CT volume, not a radiograph"):
        load_radiograph(nifti)
