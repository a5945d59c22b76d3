"""A synthetic chest CT built in code, with its truth, on any grid (orientation, obliquity, spacing).

The phantom is defined in world coordinates (RAS millimetres, origin at the centre of the body) and
sampled on whatever grid a test asks for: the values average 2x2x2 sub-samples of each voxel, so edges
carry partial volume like a real scan, and the truth labels are what lies at each voxel's centre, so
every orientation of the phantom comes with exact truth on its own grid.

What is in it (all sizes in mm):
- body: an elliptic cylinder of soft tissue (40 HU) under a 10 mm layer of fat (-100 HU);
- lungs (-850 HU): half-ellipsoids with a sloping base, right lung at +x (RAS), left at -x, with vessels
  (vertical 40 HU rods, small bright spots on axial slices);
- trachea (air) down the midline, splitting at the carina into two main bronchi that enter the lungs;
- spine: a bone column (450 HU) with a spinous process, in the posterior midline;
- couch: a dense curved shell (250 HU) posterior to the body, not touching it, with air pockets inside
  and air beneath it;
- optional stomach gas below the left lung, optional tumour (soft tissue) replacing part of the right lung,
  optional anterior junction: the two lungs touch in front of the mediastinum (a 12 mm band of lung).

Writers put a phantom on disk as NIfTI (nibabel), NRRD/MHA (SimpleITK) and DICOM series (pydicom).
"""
from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

# ------------------------------------------------------------------------------------------- anatomy

AIR, FAT, TISSUE, LUNG, BONE, COUCH = -1000.0, -100.0, 40.0, -850.0, 450.0, 250.0

BODY_AXES = (125.0, 90.0)  # semi-axes in x (right-left) and y (anterior-posterior)
FAT_MM = 10.0
LUNG_CENTRE_X, LUNG_CENTRE_Y = 58.0, 0.0
LUNG_AXES = (42.0, 58.0)
LUNG_BASE_Z, LUNG_APEX_Z, BASE_RISE_MM = -55.0, 70.0, 20.0
SPINE_CENTRE, SPINE_RADIUS = (0.0, -65.0), 13.0  # the vertebral body
SPINOUS_HALF_WIDTH, SPINOUS_Y = 4.0, (-87.0, -70.0)  # the spinous process, from the body towards the back
TRACHEA_CENTRE, TRACHEA_RADIUS, CARINA_Z = (0.0, -20.0), 9.0, 35.0
BRONCHUS_END = (32.0, -20.0, 0.0)  # for the right bronchus; the left one is mirrored in x
BRONCHUS_RADIUS = 6.0
VESSELS = [(-15.0, 20.0), (10.0, 25.0), (-10.0, -25.0), (18.0, -12.0), (0.0, 2.0), (-22.0, -2.0)]  # from lung centre
VESSEL_RADIUS = 2.5
STOMACH_CENTRE, STOMACH_AXES = (-55.0, 5.0, -62.0), (30.0, 25.0, 10.0)
TUMOUR_CENTRE, TUMOUR_RADIUS = (88.0, -20.0, -15.0), 28.0
COUCH_TOP_Y, COUCH_CURVE, COUCH_THICKNESS, COUCH_SHELL, COUCH_HALF_WIDTH = -100.0, 1 / 800, 24.0, 5.0, 135.0
COUCH_CELL = 40.0  # spacing of the walls between the couch's air pockets
JUNCTION_Y, JUNCTION_Z = (28.0, 40.0), (-10.0, 30.0)  # where touching lungs meet, anterior to the mediastinum

# Region codes of the world model.
OUTSIDE, R_LUNG, L_LUNG, BODY_TISSUE, BODY_FAT, SPINE, COUCH_SHELL_CODE, COUCH_AIR, AIRWAY, GAS, TUMOUR = range(11)
R_VESSEL, L_VESSEL = 11, 12
HU_OF = {OUTSIDE: AIR, R_LUNG: LUNG, L_LUNG: LUNG, BODY_TISSUE: TISSUE, BODY_FAT: FAT, SPINE: BONE,
         COUCH_SHELL_CODE: COUCH, COUCH_AIR: AIR, AIRWAY: AIR, GAS: AIR, TUMOUR: TISSUE, R_VESSEL: TISSUE,
         L_VESSEL: TISSUE}


def _lung(x, y, z, side: int) -> np.ndarray:
    """Half-ellipsoid lung; side +1 = right (+x in RAS), -1 = left.

    The base slopes up from posterior to anterior (the posterior recess is the deepest, as over a real
    diaphragm), so no axial slice holds a ring of lung around soft tissue.
    """
    t = (z - LUNG_BASE_Z) / (LUNG_APEX_Z - LUNG_BASE_Z)
    scale2 = np.clip(1.0 - t ** 2, 0.0, None)
    r2 = ((x - side * LUNG_CENTRE_X) / LUNG_AXES[0]) ** 2 + ((y - LUNG_CENTRE_Y) / LUNG_AXES[1]) ** 2
    base = LUNG_BASE_Z + BASE_RISE_MM * np.clip((y - LUNG_CENTRE_Y + LUNG_AXES[1]) / (2 * LUNG_AXES[1]), 0.0, 1.0)
    return (t >= 0) & (t <= 1) & (r2 <= scale2) & (z >= base)


def _segment_distance(points: np.ndarray, a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    t = np.clip(((points - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


@dataclass(frozen=True)
class Anatomy:
    """Which optional parts the phantom has."""

    stomach_gas: bool = True
    tumour: bool = False
    couch: bool = True
    touching: bool = False


def world_regions(points: np.ndarray, anatomy: Anatomy) -> np.ndarray:
    """Region code (see OUTSIDE ... L_VESSEL) at each world point (N x 3, RAS mm)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    code = np.full(len(points), OUTSIDE, np.uint8)
    if anatomy.couch:
        top = COUCH_TOP_Y + COUCH_CURVE * x ** 2
        inside = (y <= top) & (y >= top - COUCH_THICKNESS) & (np.abs(x) <= COUCH_HALF_WIDTH)
        code[inside] = COUCH_SHELL_CODE
        cell = np.abs(((x + COUCH_HALF_WIDTH) % COUCH_CELL) - COUCH_CELL / 2) < COUCH_CELL / 2 - COUCH_SHELL / 2
        pocket = (inside & (y <= top - COUCH_SHELL) & (y >= top - COUCH_THICKNESS + COUCH_SHELL)
                  & (np.abs(x) <= COUCH_HALF_WIDTH - COUCH_SHELL) & cell)
        code[pocket] = COUCH_AIR
    ea, eb = BODY_AXES
    body = (x / ea) ** 2 + (y / eb) ** 2 <= 1.0
    code[body] = BODY_FAT
    code[(x / (ea - FAT_MM)) ** 2 + (y / (eb - FAT_MM)) ** 2 <= 1.0] = BODY_TISSUE
    code[(x - SPINE_CENTRE[0]) ** 2 + (y - SPINE_CENTRE[1]) ** 2 <= SPINE_RADIUS ** 2] = SPINE
    code[(np.abs(x - SPINE_CENTRE[0]) <= SPINOUS_HALF_WIDTH) & (y >= SPINOUS_Y[0]) & (y <= SPINOUS_Y[1])] = SPINE
    if anatomy.stomach_gas:
        sc, sa = STOMACH_CENTRE, STOMACH_AXES
        gas = ((x - sc[0]) / sa[0]) ** 2 + ((y - sc[1]) / sa[1]) ** 2 + ((z - sc[2]) / sa[2]) ** 2 <= 1.0
        code[gas] = GAS
    for side, lung_code, vessel_code in ((1, R_LUNG, R_VESSEL), (-1, L_LUNG, L_VESSEL)):
        lung = _lung(x, y, z, side)
        code[lung] = lung_code
        for dx, dy in VESSELS:
            vessel = (x - side * (LUNG_CENTRE_X + dx)) ** 2 + (y - (LUNG_CENTRE_Y + dy)) ** 2 <= VESSEL_RADIUS ** 2
            code[lung & vessel] = vessel_code
    trachea = ((x - TRACHEA_CENTRE[0]) ** 2 + (y - TRACHEA_CENTRE[1]) ** 2 <= TRACHEA_RADIUS ** 2) & (z >= CARINA_Z)
    carina = (TRACHEA_CENTRE[0], TRACHEA_CENTRE[1], CARINA_Z)
    airway = trachea
    for side in (1, -1):
        end = (side * BRONCHUS_END[0], BRONCHUS_END[1], BRONCHUS_END[2])
        airway = airway | (_segment_distance(points, carina, end) <= BRONCHUS_RADIUS)
    if anatomy.touching:
        band = ((np.abs(x) <= LUNG_CENTRE_X) & (y >= JUNCTION_Y[0]) & (y <= JUNCTION_Y[1])
                & (z >= JUNCTION_Z[0]) & (z <= JUNCTION_Z[1]) & np.isin(code, (BODY_TISSUE, R_LUNG, L_LUNG)))
        code[band & (x >= 0)] = R_LUNG
        code[band & (x < 0)] = L_LUNG
    in_lung = (code == R_LUNG) | (code == L_LUNG) | (code == R_VESSEL) | (code == L_VESSEL)
    code[airway & ~in_lung & body] = AIRWAY
    # Bronchi inside the lungs are lung (their air), as in manual lung masks.
    code[airway & (code == R_VESSEL)] = R_LUNG
    code[airway & (code == L_VESSEL)] = L_LUNG
    if anatomy.tumour:
        tumour = np.linalg.norm(points - np.array(TUMOUR_CENTRE), axis=1) <= TUMOUR_RADIUS
        code[tumour & np.isin(code, (R_LUNG, R_VESSEL))] = TUMOUR
    return code


# ------------------------------------------------------------------------------------------ sampling


@dataclass
class Phantom:
    """A phantom on one grid: HU array (x, y, z), its RAS affine and the truth on the same grid."""

    name: str
    array: np.ndarray  # int16 HU
    affine: np.ndarray  # voxel -> RAS mm
    lungs: np.ndarray  # uint8 truth: 1 = right lung, 2 = left lung
    couch: np.ndarray  # bool: couch shell and the air pockets inside it
    tumour: np.ndarray  # bool: lung replaced by tumour
    body: np.ndarray  # bool: the patient (skin inwards)
    airway: np.ndarray  # bool: trachea and main bronchi outside the lungs
    gas: np.ndarray  # bool: stomach gas
    below_couch: np.ndarray  # bool: air posterior to the couch
    anatomy: Anatomy = field(default_factory=Anatomy)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def truths(self) -> dict:
        return {"lungs": self.lungs, "couch": self.couch, "tumour": self.tumour, "body": self.body,
                "airway": self.airway, "gas": self.gas, "below_couch": self.below_couch}

    def world_to_voxel(self, point) -> np.ndarray:
        return (np.linalg.inv(self.affine) @ np.append(np.asarray(point, float), 1.0))[:3]


def centred_affine(shape, spacing, rotation_deg: float = 0.0) -> np.ndarray:
    """RAS affine of a grid centred on the world origin, axes rotated about z by `rotation_deg`."""
    spacing = np.asarray(spacing, float)
    angle = np.radians(rotation_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape, float) - 1) / 2)
    return affine


def sample(affine: np.ndarray, shape, anatomy: Anatomy = Anatomy(), noise_hu: float = 15.0, seed: int = 0,
           name: str = "phantom", supersample: int = 2) -> Phantom:
    """The phantom sampled on the grid (affine, shape), one axial slab of voxels at a time."""
    shape = tuple(int(s) for s in shape)
    affine = np.asarray(affine, float)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3)  # (S, 3)
    sub = np.concatenate([sub, np.zeros((1, 3))])  # the last sample is the centre: it decides the truth
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    hu_table = np.zeros(max(HU_OF) + 1)
    for code, value in HU_OF.items():
        hu_table[code] = value
    hu = np.empty(shape, np.float32)
    out = {key: np.zeros(shape, bool) for key in ("right", "left", "couch", "tumour", "body", "airway", "gas")}
    groups = {"right": (R_LUNG, R_VESSEL), "left": (L_LUNG, L_VESSEL), "couch": (COUCH_SHELL_CODE, COUCH_AIR),
              "tumour": (TUMOUR,), "airway": (AIRWAY,), "gas": (GAS,),
              "body": (R_LUNG, L_LUNG, BODY_TISSUE, BODY_FAT, SPINE, AIRWAY, GAS, TUMOUR, R_VESSEL, L_VESSEL)}
    for k in range(shape[2]):
        index = np.stack([ii, jj, np.full_like(ii, k)], -1).reshape(-1, 1, 3).astype(float) + sub[None]
        points = index.reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
        codes = world_regions(points, anatomy).reshape(shape[0] * shape[1], len(sub))
        hu[:, :, k] = hu_table[codes[:, :-1]].mean(axis=1).reshape(shape[:2])
        for key, members in groups.items():
            out[key][:, :, k] = np.isin(codes[:, -1], members).reshape(shape[:2])
    rng = np.random.default_rng(seed)
    hu += rng.normal(0.0, noise_hu, size=shape).astype(np.float32) if noise_hu else 0
    array = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    lungs = np.zeros(shape, np.uint8)
    lungs[out["right"]] = 1
    lungs[out["left"]] = 2
    below = _below_couch(affine, shape, anatomy)
    return Phantom(name, array, affine, lungs, out["couch"], out["tumour"], out["body"], out["airway"], out["gas"],
                   below, anatomy)


def _below_couch(affine, shape, anatomy: Anatomy) -> np.ndarray:
    """Voxel centres posterior to the couch's underside (and within its width): the air beneath it."""
    if not anatomy.couch:
        return np.zeros(shape, bool)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    x, y = world[:, 0], world[:, 1]
    bottom = COUCH_TOP_Y + COUCH_CURVE * x ** 2 - COUCH_THICKNESS
    return ((y < bottom - 1.0) & (np.abs(x) <= COUCH_HALF_WIDTH)).reshape(shape)


def make_phantom(shape=(96, 96, 60), spacing=(3.0, 3.0, 3.0), *, tumour: bool = False, stomach_gas: bool = True,
                 couch: bool = True, touching: bool = False, noise_hu: float = 15.0, seed: int = 0,
                 rotation_deg: float = 0.0, name: str = "phantom") -> Phantom:
    """The phantom on an RAS grid centred on the body (optionally rotated about z: an oblique scan)."""
    anatomy = Anatomy(stomach_gas=stomach_gas, tumour=tumour, couch=couch, touching=touching)
    return sample(centred_affine(shape, spacing, rotation_deg), shape, anatomy, noise_hu, seed, name)


@functools.lru_cache(maxsize=None)
def standard(kind: str = "plain") -> Phantom:
    """The phantoms the tests share, built once per process: "plain", "tumour" or "touching".

    Treat them as read-only.
    """
    if kind not in ("plain", "tumour", "touching"):
        raise ValueError(f"unknown phantom kind {kind!r}")
    return make_phantom(tumour=kind == "tumour", touching=kind == "touching", name=kind)


# ---------------------------------------------------------------------------------------- orientations


def reindex_array(array: np.ndarray, flips=(), order=(0, 1, 2)) -> np.ndarray:
    """An array with axes `flips` reversed, then transposed to `order` (see `reindexed`)."""
    return np.ascontiguousarray(np.transpose(np.flip(array, tuple(flips)) if flips else array, order))


def reindexed(phantom: Phantom, flips=(), order=(0, 1, 2), name: str | None = None) -> Phantom:
    """The same voxels (noise included) stored in another array order, with the affine that keeps them in place.

    `flips`: array axes reversed; `order`: the new array's axes as old axes (a transpose), applied after.
    """
    affine = phantom.affine.copy()
    for axis in flips:
        flip = np.eye(4)
        flip[axis, axis] = -1
        flip[axis, 3] = phantom.array.shape[axis] - 1
        affine = affine @ flip
    affine = affine @ np.eye(4)[:, list(order) + [3]]
    arrays = {key: reindex_array(value, flips, order) for key, value in phantom.truths().items()}
    return Phantom(name or phantom.name, reindex_array(phantom.array, flips, order), affine,
                   anatomy=phantom.anatomy, **arrays)


# Storage orders of the same voxels: (axes reversed, then axis order), as `reindexed` takes them.
REINDEXED = {
    "RAS": ((), (0, 1, 2)),  # index up = towards the patient's right, anterior, superior
    "LPS": ((0, 1), (0, 1, 2)),  # DICOM's orientation: x and y reversed
    "flipped": ((0,), (0, 1, 2)),  # x reversed only: a left-handed LAS grid, as many NIfTI files are
    "permuted": ((2,), (2, 0, 1)),  # axes stored in (z, x, y) order, z running downwards
}
ANISOTROPIC_SPACING = (2.4, 3.0, 4.5)
VARIANTS = tuple(REINDEXED) + ("oblique", "anisotropic")


def variant(base: Phantom, name: str) -> Phantom:
    """The base phantom (an RAS grid from make_phantom) stored or sampled another way; see VARIANTS.

    RAS/LPS/flipped/permuted hold the very same voxels; "oblique" is sampled anew on a grid rotated
    15 degrees about z, "anisotropic" at 2.4 x 3.0 x 4.5 mm over the same field of view.
    """
    if name in REINDEXED:
        flips, order = REINDEXED[name]
        return reindexed(base, flips, order, name=name)
    shape, spacing = base.array.shape, base.spacing
    if name == "oblique":
        return sample(centred_affine(shape, spacing, 15.0), shape, base.anatomy, seed=1, name=name)
    if name == "anisotropic":
        extent = np.asarray(shape) * spacing
        aniso_shape = tuple(int(round(e / s)) for e, s in zip(extent, ANISOTROPIC_SPACING))
        return sample(centred_affine(aniso_shape, ANISOTROPIC_SPACING), aniso_shape, base.anatomy, seed=2, name=name)
    raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")


def orientations(base: Phantom | None = None, **kwargs) -> dict[str, Phantom]:
    """One phantom in every storage orientation of VARIANTS, as {name: Phantom}; all share one anatomy."""
    base = base or make_phantom(**kwargs)
    return {name: variant(base, name) for name in VARIANTS}


def axial_slice(phantom: Phantom, z_mm: float = 10.0) -> Phantom:
    """One axial slice (shape x, y, 1) of an RAS phantom, at the slice nearest to world z = z_mm."""
    k = int(round(phantom.world_to_voxel([0.0, 0.0, z_mm])[2]))
    affine = phantom.affine.copy()
    affine[:3, 3] = phantom.affine[:3, :3] @ np.array([0, 0, k]) + phantom.affine[:3, 3]
    arrays = {key: value[:, :, k:k + 1].copy() for key, value in phantom.truths().items()}
    return Phantom(f"{phantom.name}-slice", phantom.array[:, :, k:k + 1].copy(), affine, anatomy=phantom.anatomy,
                   **arrays)


def miscalibrated(phantom: Phantom, air: float = -790.0, tissue: float = 0.0) -> Phantom:
    """The phantom with values mapped linearly so air reads `air` and soft tissue `tissue` (as ct-slices)."""
    slope = (tissue - air) / (TISSUE - AIR)
    values = (phantom.array.astype(np.float32) - AIR) * slope + air
    return replace(phantom, array=np.round(values).astype(np.int16), name=phantom.name + "-miscalibrated")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / total) if total else 1.0


# --------------------------------------------------------------------------------------------- writers


def write_nifti(phantom_or_array, path: Path, affine: np.ndarray | None = None, *, qform_code: int = 1,
                sform_code: int = 1, scaled: bool = False) -> Path:
    """NIfTI with nibabel; `scaled` stores uint16 with scl_inter = -1024 (a common scanner export)."""
    import nibabel as nib

    array, affine = _array_affine(phantom_or_array, affine)
    if scaled:
        img = nib.Nifti1Image((array.astype(np.int32) + 1024).astype(np.uint16), affine)
        img.header.set_slope_inter(1.0, -1024.0)
    else:
        img = nib.Nifti1Image(array, affine)
    img.set_qform(affine if qform_code else None, qform_code)
    img.set_sform(affine if sform_code else None, sform_code)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def write_itk(phantom_or_array, path: Path, affine: np.ndarray | None = None) -> Path:
    """NRRD, MHA (any format SimpleITK writes, by suffix), geometry in its LPS convention."""
    import SimpleITK as sitk

    array, affine = _array_affine(phantom_or_array, affine)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in lps[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) precise to 1e-6 or better for these values."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def write_dicom_series(phantom_or_array, folder: Path, affine: np.ndarray | None = None, *, modality: str = "CT",
                       series_uid: str | None = None, slope: float = 1.0, intercept: float = -1024.0,
                       shuffle_names: bool = False, seed: int = 0, description: str = "phantom",
                       prefix: str = "") -> list[Path]:
    """One file per axial slice (array axis 2), uncompressed, with the geometry tags a reader needs.

    Pixel columns run along array axis 0 and rows along axis 1, as lungct reads them; stored values are
    (HU - intercept) / slope. `modality="MR"` writes an MR series (no rescale tags) for refusal tests.
    A left-handed affine cannot be kept: readers order slices along the row x column normal. `shuffle_names`
    gives the files random names so their order on disk says nothing about the slice order; `prefix`
    starts every name, so two series can share a folder.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    array, affine = _array_affine(phantom_or_array, affine)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    stored = np.round((array.astype(np.float64) - intercept) / slope)
    signed = stored.min() < 0
    stored = stored.astype(np.int16 if signed else np.uint16)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(array.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientName = "Phantom^Chest"
        ds.PatientID = "PHANTOM"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        position = lps[:3, 3] + lps[:3, 2] * k
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in np.concatenate([row_dir, col_dir])]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (along axis 1), column spacing
        ds.SliceThickness = _ds(spacing[2])
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        if modality == "CT":
            ds.RescaleSlope = _ds(slope)
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleType = "HU"
            ds.KVP = "120"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        name = f"{uuid.UUID(int=int(rng.integers(0, 2 ** 63))).hex}.dcm" if shuffle_names else f"IMG{k + 1:04d}.dcm"
        name = prefix + name
        path = folder / name
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
        paths.append(path)
    return paths


def _array_affine(phantom_or_array, affine):
    if isinstance(phantom_or_array, Phantom):
        return phantom_or_array.array, phantom_or_array.affine
    if affine is None:
        raise ValueError("an array needs its affine")
    return np.asarray(phantom_or_array), np.asarray(affine, float)
