"""A synthetic two-modality cardiac phantom: mkdseg's embedded default dataset (no download).

Anatomy
    Each subject is a 3D volume of transverse slices cropped tightly around the heart, as in the
    MM-WHS preprocessing. Slice 0 is the most inferior (LV apex), the last slice the most superior
    (great vessels). In-plane the radiological convention holds: image rows run anterior (top) to
    posterior, image columns run patient right (left edge) to patient left.

    The heart is built from analytic solids in a "heart frame" (in-plane unit = half the field of
    view, z = 0 at the apex and 1 above the great vessels): the LV cavity is an ellipsoid whose long
    axis tilts towards the anterior-left apex, the myocardium (MYO) a shell around it cut at the valve
    plane, the RV a larger ellipsoid that the LV and MYO overpaint into a crescent (plus an outflow
    tract leading to the PA), the RA to the patient's right, the LA posterior, and the AA and PA are
    near-cylindrical tubes in the upper slices (the PA with a left branch at the top). Papillary
    muscles sit inside the LV cavity: they look like myocardium but are labelled LV, as in MM-WHS.
    Around the heart: a pericardial fat layer of varying thickness, lungs, anterior chest wall with
    sternum, subcutaneous fat, spine with paraspinal muscle, the (unlabelled) descending aorta and,
    in the lowest slices, the liver dome.

    Per subject the heart is scaled, rotated in-plane, shifted, its parts jittered in position and
    size, and the whole heart frame warped by a smooth random displacement field. Surroundings vary
    less. Solids are evaluated at voxel centres, so the same seed gives the same anatomy at any
    ``image_size``. Any structure covering fewer than ~40 pixels (at 64 px; the same fraction of
    the slice at other sizes) in a slice is removed from that slice (becomes fat): slivers at the
    tips of solids are unlearnable at 64 px and would only add label noise.

Appearance
    Every voxel carries a tissue (the seven structures, plus muscle, fat, lung, bone, liver,
    descending aorta, papillary muscle, air), and each modality maps tissues to intensities:

    * CT (contrast-enhanced, arterial phase, in HU): left-heart blood (LV, LA, AA) brightest, right
      heart (RA, RV, PA) less enhanced, each cavity with its own level and per-subject enhancement;
      myocardium and muscle mid-grey, fat dark-ish, lung very dark with bright vessels, bone bright.
      Correlated Gaussian noise. Window [-350, 650] HU.
    * MR (bSSFP-like, arbitrary units): blood bright, but the aorta and PA darker (flow dephasing,
      with a flow texture); myocardium and muscle very dark; fat bright (brighter than some blood);
      lung near zero; vertebral marrow intermediate. A smooth multiplicative bias field (coil
      sensitivity), then Rician noise. Window [0, 1.1].

    So the two are not a monotone map of each other: fat < myocardium in CT but fat > myocardium in
    MR, and AA > RA in CT but AA < RA in MR. Both images get a slight in-plane blur (partial volume)
    before noise, are windowed with a fixed per-modality window to [-1, 1] and clipped, so
    intensities are comparable across subjects.

Seeds
    ``render_subject(seed, modality)`` draws the anatomy from ``seed`` alone and the appearance
    (noise, bias field, enhancement) from ``seed`` and the modality, so the same seed in both
    modalities shows the same person. ``generate_phantom`` derives each subject's seed from the
    dataset seed, the modality and the subject index, so CT and MR subjects are different people
    (unpaired), as in MM-WHS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from mkdseg.data.cache import MANIFEST, CacheInfo, SliceCache, VolumeRecord
from mkdseg.labels import MMWHS, preset_structures

__all__ = [
    "DEFAULT_IMAGE_SIZE", "MODALITIES", "NUM_CLASSES", "PHANTOM_INFO", "STRUCTURES", "TISSUES", "Anatomy", "AppearanceModel", "Solid", "generate_phantom", "min_structure_area",
    "rasterise_tissues", "render_appearance", "render_subject", "sample_anatomy", "subject_seed",
]

# named as nnU-Net datasets' channel_names are ("CT", "MRI" -> ct, mri), so a config, a checkpoint's
# data_spec or a command that names a modality means the same on the phantom and on preprocessed scans
MODALITIES: tuple[str, ...] = ("ct", "mri")
#: the slice size of the phantom when ``data.image_size`` is not set (the CPU configs' size)
DEFAULT_IMAGE_SIZE = 64
PHANTOM_SOURCE = "phantom"
# Bump when the generator's output changes, so caches written by an older version are regenerated.
PHANTOM_VERSION = 1

# --------------------------------------------------------------------------------------------------
# Tissues. Indices 1..7 coincide with the label classes (STRUCTURES); the rest are unlabelled.
# --------------------------------------------------------------------------------------------------
STRUCTURES: tuple[str, ...] = tuple(name for name, _ in MMWHS)  # the phantom draws MM-WHS's seven, in its class order
NUM_CLASSES = len(STRUCTURES) + 1
PLANE = "PL"  # slice rows run to posterior, columns to the patient's left (see Anatomy above)
#: what every phantom cache holds; the DataModule needs it before the phantom is generated
PHANTOM_INFO = CacheInfo(tuple(preset_structures(MMWHS, MODALITIES)), MODALITIES, {"target": "ct", "assistant": "mri"})
TISSUES: tuple[str, ...] = ("air",) + STRUCTURES + (
    "muscle", "fat", "lung", "bone", "liver", "descending_aorta", "papillary",
)
TISSUE_INDEX = {name: i for i, name in enumerate(TISSUES)}
# The label of each tissue: structures label themselves, papillary muscles belong to the LV cavity
# (MM-WHS convention), everything else is background.
TISSUE_LABEL = np.zeros(len(TISSUES), dtype=np.uint8)
TISSUE_LABEL[1:NUM_CLASSES] = np.arange(1, NUM_CLASSES)
TISSUE_LABEL[TISSUE_INDEX["papillary"]] = TISSUE_INDEX["LV"]

# Radius (image-frame units) of the morphological closing of the heart that keeps lungs out of the
# gaps between chambers.
MEDIASTINUM_CLOSING = 0.3
# Structures smaller than this fraction of a slice (40 px at 64 x 64) are removed from that slice.
MIN_AREA_FRACTION = 40 / 64**2

# --------------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Solid:
    """A (super-)ellipsoid in the heart frame, painted with one tissue.

    Inside means ``(u'/ru)^2 + (v'/rv)^2 + |dz/rz|^pz <= 1`` (and ``z <= top``), where ``(u', v')`` is
    the in-plane offset from the centre rotated by ``angle`` degrees; the centre moves by
    ``shear * (z - cz)`` along z, which tilts the long axis. ``pz > 2`` makes tube-like solids.
    """

    tissue: str
    centre: tuple[float, float, float]  # (u, v, z)
    radii: tuple[float, float, float]
    angle: float = 0.0
    shear: tuple[float, float] = (0.0, 0.0)  # (du/dz, dv/dz)
    pz: float = 2.0
    top: float = np.inf  # cut plane (the valve plane for LV, MYO and RV)


def _lv_solids() -> tuple[Solid, ...]:
    """LV cavity, its myocardial shell (drawn first, then hollowed by the cavity) and papillary muscles."""
    lv = Solid("LV", (0.25, 0.02, 0.32), (0.27, 0.23, 0.30), angle=-30, shear=(-0.45, 0.35), top=0.55)
    wall = (0.10, 0.10, 0.09)
    myo = replace(lv, tissue="MYO", radii=tuple(r + w for r, w in zip(lv.radii, wall)))
    papillary = (
        Solid("papillary", (0.30, -0.10, 0.28), (0.05, 0.05, 0.14), shear=lv.shear, top=0.45),
        Solid("papillary", (0.38, 0.10, 0.28), (0.05, 0.05, 0.14), shear=lv.shear, top=0.45),
    )
    return (myo, lv) + papillary


# The mean heart, painted in this order (later solids overwrite earlier ones).
HEART_BLUEPRINT: tuple[Solid, ...] = (
    Solid("RA", (-0.46, 0.06, 0.56), (0.28, 0.30, 0.26)),
    Solid("RV", (-0.02, -0.24, 0.32), (0.45, 0.28, 0.30), angle=25, shear=(-0.2, 0.2), top=0.62),
    Solid("RV", (0.02, -0.40, 0.62), (0.20, 0.16, 0.14)),  # outflow tract, leads into the PA
    Solid("LA", (0.08, 0.46, 0.66), (0.34, 0.22, 0.20)),
    Solid("PA", (0.12, -0.40, 0.84), (0.15, 0.15, 0.22), shear=(0.4, 0.7), pz=4),
    Solid("PA", (0.40, -0.15, 0.98), (0.22, 0.11, 0.08), angle=-40),  # left pulmonary artery
    Solid("AA", (-0.10, 0.10, 0.84), (0.16, 0.16, 0.25), shear=(-0.1, 0.0), pz=4),
) + _lv_solids()


# Where the heart frame's origin lies in the image and how large the mean heart is drawn: the heart
# fills most of the slice, like MM-WHS crops.
HEART_ORIGIN = (0.08, -0.06, 0.0)
HEART_SCALE = 1.3


@dataclass(frozen=True)
class Anatomy:
    """One subject's anatomy: the jittered heart solids, the heart-frame pose and warp, surroundings."""

    solids: tuple[Solid, ...]
    scale: float  # in-plane heart size factor
    angle: float  # in-plane heart rotation, degrees
    shift: tuple[float, float, float]  # heart position (u, v, z) in the image frame
    z_scale: float
    warp: np.ndarray  # [3 components, n_waves, 5]: amplitude, frequency (u, v, z), phase
    fat_thickness: tuple[float, float]  # pericardial fat: mean and amplitude of its variation
    fat_waves: np.ndarray  # [n_waves, 5], like warp
    body_jitter: np.ndarray  # [8] small offsets of lungs, spine, aorta, chest wall, liver


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one subject's anatomy around the blueprint."""
    solids = tuple(_jitter_solid(s, rng) for s in HEART_BLUEPRINT)
    return Anatomy(
        solids=solids,
        scale=float(rng.uniform(0.9, 1.08)),
        angle=float(rng.uniform(-15, 15)),
        shift=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.03, 0.03))),
        z_scale=float(rng.uniform(0.95, 1.05)),
        warp=_random_waves(rng, n_components=3, n_waves=3, amplitude=0.03, max_freq=1.0),
        fat_thickness=(float(rng.uniform(0.04, 0.07)), float(rng.uniform(0.01, 0.03))),
        fat_waves=_random_waves(rng, n_components=1, n_waves=3, amplitude=1.0, max_freq=1.5)[0],
        body_jitter=rng.uniform(-1, 1, size=8),
    )


def _jitter_solid(solid: Solid, rng: np.random.Generator) -> Solid:
    centre = np.asarray(solid.centre) + rng.normal(0, (0.03, 0.03, 0.02))
    radii = np.asarray(solid.radii) * rng.uniform(0.9, 1.1, size=3)
    return replace(
        solid,
        centre=tuple(centre.tolist()),
        radii=tuple(radii.tolist()),
        angle=solid.angle + float(rng.uniform(-10, 10)),
    )


def _random_waves(rng, n_components: int, n_waves: int, amplitude: float, max_freq: float) -> np.ndarray:
    """Parameters of a smooth random field: a sum of ``n_waves`` plane sine waves per component."""
    amp = rng.uniform(0.3, 1.0, size=(n_components, n_waves, 1)) * amplitude / np.sqrt(n_waves)
    freq = rng.uniform(-max_freq, max_freq, size=(n_components, n_waves, 3))
    phase = rng.uniform(0, 2 * np.pi, size=(n_components, n_waves, 1))
    return np.concatenate([amp, freq, phase], axis=-1)


def _eval_waves(waves: np.ndarray, u, v, z) -> np.ndarray:
    """Evaluate one component of a wave field (``waves`` [n_waves, 5]) on broadcastable coordinates."""
    field = np.zeros(np.broadcast_shapes(np.shape(u), np.shape(v), np.shape(z)), dtype=np.float32)
    for amp, fu, fv, fz, phase in waves:
        field += amp * np.sin(np.pi * (fu * u + fv * v + fz * z) + phase)
    return field


def _image_grid(image_size: int, n_slices: int):
    """Voxel-centre coordinates (u, v, z), broadcastable to [S, H, W]: u, v in [-1, 1], z in [0, 1]."""
    ax = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size * 2 - 1
    z = (np.arange(n_slices, dtype=np.float32) + 0.5) / n_slices
    return ax[None, None, :], ax[None, :, None], z[:, None, None]


def _heart_frame(anatomy: Anatomy, u, v, z):
    """Map image coordinates to (warped) heart-frame coordinates, as full [S, H, W] arrays."""
    su, sv, sz = np.add(anatomy.shift, HEART_ORIGIN)
    cos, sin = np.cos(np.deg2rad(anatomy.angle)), np.sin(np.deg2rad(anatomy.angle))
    scale = HEART_SCALE * anatomy.scale
    du, dv = (u - su) / scale, (v - sv) / scale
    hu = cos * du + sin * dv
    hv = -sin * du + cos * dv
    hz = np.broadcast_to((z - sz) / anatomy.z_scale, np.broadcast_shapes(hu.shape, np.shape(z)))
    hu, hv = np.broadcast_to(hu, hz.shape), np.broadcast_to(hv, hz.shape)
    warp = [_eval_waves(anatomy.warp[c], hu, hv, hz) for c in range(3)]
    return hu + warp[0], hv + warp[1], hz + warp[2]


def _inside(solid: Solid, u, v, z) -> np.ndarray:
    cu, cv, cz = solid.centre
    ru, rv, rz = solid.radii
    du = u - (cu + solid.shear[0] * (z - cz))
    dv = v - (cv + solid.shear[1] * (z - cz))
    cos, sin = np.cos(np.deg2rad(solid.angle)), np.sin(np.deg2rad(solid.angle))
    a, b = cos * du + sin * dv, -sin * du + cos * dv
    return ((a / ru) ** 2 + (b / rv) ** 2 + np.abs((z - cz) / rz) ** solid.pz <= 1) & (z <= solid.top)


def _ellipse(u, v, centre, radii) -> np.ndarray:
    return ((u - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2 <= 1


def rasterise_tissues(anatomy: Anatomy, image_size: int, n_slices: int) -> np.ndarray:
    """Tissue indices (see ``TISSUES``) as uint8 [n_slices, image_size, image_size]."""
    u, v, z = _image_grid(image_size, n_slices)
    shape = (n_slices, image_size, image_size)
    tissue = np.full(shape, TISSUE_INDEX["fat"], dtype=np.uint8)  # mediastinal fat unless painted over
    _paint_surroundings(tissue, anatomy.body_jitter, u, v, z)

    hu, hv, hz = _heart_frame(anatomy, u, v, z)
    heart = np.zeros(shape, dtype=np.uint8)
    for solid in anatomy.solids:
        heart[_inside(solid, hu, hv, hz)] = TISSUE_INDEX[solid.tissue]
    mean_fat, fat_variation = anatomy.fat_thickness
    fat_thickness = mean_fat + fat_variation * _eval_waves(anatomy.fat_waves, hu, hv, hz)
    _paint_mediastinal_fat(tissue, heart > 0, fat_thickness)
    tissue[heart > 0] = heart[heart > 0]
    _remove_slivers(tissue, min_structure_area(image_size))
    return tissue


def _paint_mediastinal_fat(tissue: np.ndarray, heart: np.ndarray, thickness: np.ndarray) -> None:
    """Pericardial fat: a layer of varying ``thickness`` around the heart. The lungs also stay out of
    the gaps between chambers (the heart's morphological closing): those belong to the mediastinum."""
    dist = _in_plane_distance(~heart)
    between_chambers = _in_plane_distance(dist < MEDIASTINUM_CLOSING) >= MEDIASTINUM_CLOSING
    tissue[(dist > 0) & (dist < thickness)] = TISSUE_INDEX["fat"]
    tissue[between_chambers & (tissue == TISSUE_INDEX["lung"])] = TISSUE_INDEX["fat"]


def _in_plane_distance(mask: np.ndarray) -> np.ndarray:
    """Per slice, the distance (image-frame units) from each True voxel to the nearest False one."""
    pixel = 2.0 / mask.shape[-1]
    return ndimage.distance_transform_edt(mask, sampling=(1e6, pixel, pixel))  # 1e6: slices apart


def _paint_surroundings(tissue: np.ndarray, jitter: np.ndarray, u, v, z) -> None:
    """Body, lungs, chest wall, spine, descending aorta and liver, in the image frame (in place)."""

    def paint(mask, name: str) -> None:
        tissue[np.broadcast_to(mask, tissue.shape)] = TISSUE_INDEX[name]

    j = 0.05 * jitter  # small per-subject offsets
    body = _ellipse(u, v, (0, 0.1), (1.45, 1.2))
    paint(~body, "air")
    paint(body & ~_ellipse(u, v, (0, 0.1), (1.37, 1.12)), "fat")  # subcutaneous
    for side in (-1, 1):  # right lung (image left), left lung (image right)
        paint(_ellipse(u, v, (side * (1.0 + j[0]), 0.2 + j[1]), (0.8, 0.95)), "lung")
    chest_wall = (v < -0.80 + j[2] + 0.25 * u**2) & body
    paint(chest_wall, "muscle")
    paint(chest_wall & (v < -0.9 + 0.25 * u**2) & (np.abs(u) > 0.2), "fat")
    paint(_ellipse(u, v, (j[3], -0.92), (0.14, 0.06)), "bone")  # sternum
    paint(_ellipse(u, v, (j[4], 1.08), (0.42, 0.32)), "muscle")  # paraspinal
    paint(_ellipse(u, v, (j[4], 1.08), (0.22, 0.22)), "bone")  # vertebral body
    paint(_ellipse(u, v, (0.30 + j[5], 0.74 + j[6]), (0.12, 0.12)), "descending_aorta")
    # Liver dome under the right hemidiaphragm, only in the lowest slices.
    dome = np.sqrt(np.clip(1 - ((u + 0.45) / 0.8) ** 2 - ((v - 0.3) / 0.8) ** 2, 0, 1))
    paint((z < -0.25 + 0.35 * dome + j[7]) & body & (u < 0.4), "liver")


def min_structure_area(image_size: int) -> int:
    """Fewest pixels a structure covers in any slice where it appears (40 at 64 x 64)."""
    return max(1, round(MIN_AREA_FRACTION * image_size**2))


def _remove_slivers(tissue: np.ndarray, min_area: int) -> None:
    """Turn every structure with fewer than ``min_area`` pixels in a slice into fat (in place)."""
    labels = TISSUE_LABEL[tissue]
    for s in range(tissue.shape[0]):
        areas = np.bincount(labels[s].ravel(), minlength=NUM_CLASSES)
        for cls in np.flatnonzero((areas > 0) & (areas < min_area)):
            if cls:
                tissue[s][labels[s] == cls] = TISSUE_INDEX["fat"]


# --------------------------------------------------------------------------------------------------
# Appearance
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppearanceModel:
    """How one modality renders tissues: mean intensity, fine texture and coarse texture per tissue."""

    mean: dict[str, float]
    fine: dict[str, float]  # std of a pixel-scale texture
    coarse: dict[str, float]  # std of a smooth texture (mixing, flow)
    window: tuple[float, float]  # mapped to [-1, 1], then clipped
    noise: float  # std of the Gaussian (CT) or of each complex channel (MR)
    blood_jitter: float  # relative per-subject spread of blood enhancement


CT = AppearanceModel(
    # Arterial-phase CT angiography in HU: left heart brightest, right heart less enhanced.
    mean={
        "air": -1000, "lung": -830, "fat": -100, "muscle": 45, "liver": 70, "bone": 650,
        "MYO": 110, "papillary": 110,
        "LV": 400, "LA": 370, "AA": 430, "descending_aorta": 420, "RA": 240, "RV": 270, "PA": 300,
    },
    fine={"lung": 25, "bone": 80, "MYO": 12, "liver": 10, "muscle": 10, "fat": 10},
    coarse={"RA": 35, "RV": 15},  # contrast mixing with unenhanced caval inflow
    window=(-350.0, 650.0),
    noise=22.0,
    blood_jitter=0.12,
)

MR = AppearanceModel(
    # bSSFP-like, arbitrary units: bright blood (darker, textured in the fast-flowing great vessels),
    # very dark myocardium, bright fat.
    mean={
        "air": 0.0, "lung": 0.05, "fat": 0.95, "muscle": 0.2, "liver": 0.3, "bone": 0.45,
        "MYO": 0.16, "papillary": 0.16,
        "LV": 0.82, "LA": 0.76, "AA": 0.62, "descending_aorta": 0.6, "RA": 0.74, "RV": 0.79, "PA": 0.66,
    },
    fine={"bone": 0.05, "fat": 0.03, "liver": 0.02, "muscle": 0.02},
    coarse={"AA": 0.06, "PA": 0.06, "descending_aorta": 0.06, "LV": 0.02, "RV": 0.02},
    window=(0.0, 1.1),
    noise=0.03,
    blood_jitter=0.05,
)
APPEARANCE = {"ct": CT, "mri": MR}
BLOOD = ("LA", "LV", "RA", "RV", "AA", "PA", "descending_aorta")
# Blood that has passed the lungs: in arterial-phase CT it enhances together, apart from the right heart.
LEFT_SIDED_BLOOD = ("LA", "LV", "AA", "descending_aorta")
BLUR_SIGMA_PX = 0.6  # in-plane partial-volume blur
MR_BIAS_STRENGTH = 0.25  # the log bias field spans about +-this across the field of view, plus slow waves
MR_BOUNDARY_DARKENING = 0.35  # signal kept in fat voxels at a fat-water interface


def render_appearance(tissue: np.ndarray, modality: str, rng: np.random.Generator) -> np.ndarray:
    """Render a tissue volume [S, H, W] as a float32 image in [-1, 1] with the modality's model."""
    modality = _check_modality("modality", modality)
    model = APPEARANCE[modality]
    shape = tissue.shape
    # Object: tissue means and textures, then the modality's own structure in the object.
    image = _tissue_lut(model, modality, rng)[tissue]
    image += _lut(model.fine)[tissue] * _texture(rng, shape, sigma_px=0.7)
    image += _lut(model.coarse)[tissue] * _texture(rng, shape, sigma_px=0.08 * shape[-1])
    if modality == "ct":
        image += _lung_vessels(tissue, rng)
    else:
        image[_fat_water_boundary(tissue)] *= MR_BOUNDARY_DARKENING
    # Acquisition: partial-volume blur, then the modality's noise (and MR coil sensitivity).
    image = ndimage.gaussian_filter(image, sigma=(0, BLUR_SIGMA_PX, BLUR_SIGMA_PX))
    if modality == "ct":
        image += model.noise * _texture(rng, shape, sigma_px=0.5)  # CT noise is spatially correlated
    else:
        image = _rician(image * _bias_field(rng, shape), model.noise, rng)
    lo, hi = model.window
    return np.clip((image - lo) / (hi - lo) * 2 - 1, -1, 1).astype(np.float32)


def _lut(values: dict[str, float]) -> np.ndarray:
    lut = np.zeros(len(TISSUES), dtype=np.float32)
    for name, value in values.items():
        lut[TISSUE_INDEX[name]] = value
    return lut


def _tissue_lut(model: AppearanceModel, modality: str, rng: np.random.Generator) -> np.ndarray:
    """Mean intensity per tissue with per-subject blood enhancement (CT: left and right heart apart)."""
    lut = _lut(model.mean)
    base = lut[TISSUE_INDEX["muscle"]]
    if modality == "ct":
        gain_left, gain_right = 1 + model.blood_jitter * rng.uniform(-1, 1, size=2)
    else:
        gain_left = gain_right = 1 + model.blood_jitter * rng.uniform(-1, 1)
    for name in BLOOD:
        gain = gain_left if name in LEFT_SIDED_BLOOD else gain_right
        lut[TISSUE_INDEX[name]] = base + gain * (lut[TISSUE_INDEX[name]] - base)
    return lut


def _texture(rng: np.random.Generator, shape, sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian noise smoothed in-plane with ``sigma_px``."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    smooth = ndimage.gaussian_filter(noise, sigma=(0, sigma_px, sigma_px))
    return smooth / max(float(smooth.std()), 1e-6)


def _lung_vessels(tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sparse bright blobs in the lungs (vessels seen end-on), in HU to add."""
    blobs = _texture(rng, tissue.shape, sigma_px=0.012 * tissue.shape[-1] + 0.3)
    return np.where((tissue == TISSUE_INDEX["lung"]) & (blobs > 2.2), 900.0, 0.0).astype(np.float32)


def _fat_water_boundary(tissue: np.ndarray) -> np.ndarray:
    """Fat pixels touching water-based tissue in-plane: dark in bSSFP (the "India ink" artefact)."""
    fat = tissue == TISSUE_INDEX["fat"]
    water = ~np.isin(tissue, [TISSUE_INDEX[name] for name in ("fat", "air", "lung", "bone")])
    in_plane = ndimage.generate_binary_structure(3, 1) & np.array([0, 1, 0], bool)[:, None, None]
    return fat & ndimage.binary_dilation(water, structure=in_plane)


def _bias_field(rng: np.random.Generator, shape) -> np.ndarray:
    """Smooth multiplicative field: signal falls off away from an anterior coil, plus slow waves."""
    u, v, z = _image_grid(shape[-1], shape[0])
    direction = np.deg2rad(rng.uniform(-30, 30))
    gradient = np.sin(direction) * u - np.cos(direction) * v  # > 0 towards the anterior coil
    waves = _random_waves(rng, n_components=1, n_waves=3, amplitude=1.0, max_freq=0.5)[0]
    log_bias = MR_BIAS_STRENGTH * (gradient + 0.7 * _eval_waves(waves, u, v, z))
    return np.exp(log_bias).astype(np.float32)


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise (the MR magnitude image's noise)."""
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.hypot(real, imag)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _check_modality(name: str, value: str) -> str:
    """``value``, one of the phantom's modalities; ``ValueError`` otherwise."""
    if value not in MODALITIES:
        raise ValueError(f"{name} must be one of {MODALITIES}, got {value!r}")
    return value


def render_subject(
    seed: int, modality: str, image_size: int = 64, n_slices: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Render one phantom subject.

    The anatomy depends on ``seed`` only (the same seed in both modalities is the same person); noise,
    bias field and enhancement depend on ``seed`` and ``modality``. Every structure appears for
    ``n_slices >= 8``.

    Returns:
        image: float32 [n_slices, image_size, image_size] in [-1, 1].
        label: uint8, same shape, class indices 0..7 (see ``mkdseg.labels``).

    >>> image, label = render_subject(0, "ct", image_size=32, n_slices=8)
    >>> image.shape, image.dtype, label.dtype, int(label.max())
    ((8, 32, 32), dtype('float32'), dtype('uint8'), 7)
    """
    modality = _check_modality("modality", modality)
    if image_size < 16 or n_slices < 1:
        raise ValueError(f"image_size must be >= 16 and n_slices >= 1, got {image_size} and {n_slices}")
    anatomy = sample_anatomy(np.random.default_rng([seed, 0]))
    tissue = rasterise_tissues(anatomy, image_size, n_slices)
    image = render_appearance(tissue, modality, np.random.default_rng([seed, 1, MODALITIES.index(modality)]))
    return image, TISSUE_LABEL[tissue]


def render_record_as(record: VolumeRecord, modality: str) -> np.ndarray:
    """The phantom subject of ``record`` as ``modality`` would show it: same anatomy, so the same
    label map. The perfect translation of that subject, for the oracle-translation control."""
    modality = _check_modality("modality", modality)
    seed, image_size = _phantom_subject(record)
    image, _ = render_subject(seed, modality, image_size, record.n_slices)
    return image


def record_tissues(record: VolumeRecord) -> np.ndarray:
    """The tissue map ``[S, H, W]`` (indices into ``TISSUES``) of the phantom subject of ``record``:
    finer than its label map (fat, muscle, lung, ... are all background there)."""
    seed, image_size = _phantom_subject(record)
    return rasterise_tissues(sample_anatomy(np.random.default_rng([seed, 0])), image_size, record.n_slices)


def _phantom_subject(record: VolumeRecord) -> tuple[int, int]:
    """(anatomy seed, image size) of a phantom record; other records have no paired rendering."""
    params = record.extra.get("phantom")
    if params is None or "anatomy_seed" not in record.extra:
        raise ValueError(f"{record.modality}/{record.subject} is not a phantom volume: only the phantom has a paired rendering")
    return record.extra["anatomy_seed"], params["image_size"]


def subject_seed(seed: int, modality: str, index: int) -> int:
    """The anatomy seed of subject ``index`` of ``modality`` in the dataset drawn with ``seed``."""
    modality = _check_modality("modality", modality)
    return int(np.random.SeedSequence([seed, MODALITIES.index(modality), index]).generate_state(1)[0])


def generate_phantom(
    root: str | os.PathLike,
    *,
    target: str = "ct",
    assistant: str = "mri",
    n_target: int = 12,
    n_assistant: int = 12,
    image_size: int = DEFAULT_IMAGE_SIZE,
    n_slices: int = 16,
    seed: int = 0,
) -> SliceCache:
    """Write (or reuse) a slice cache of the phantom under ``root`` and return it.

    Target subjects are named ``"000"``, ``"001"``, ... under modality ``target``, assistant subjects
    likewise under ``assistant``; their anatomies are drawn independently (unpaired). The generation
    parameters are stored in each record's ``extra["phantom"]``: a cache with the same parameters is
    reused as is, otherwise ``root`` is regenerated. A cache in ``root`` that is not a phantom (an
    MM-WHS cache, say) is never overwritten: that raises ``ValueError``.
    """
    target, assistant = _check_modality("target", target), _check_modality("assistant", assistant)
    if target == assistant:
        raise ValueError(f"target and assistant must be different modalities, both are {target!r}")
    if n_target < 1 or n_assistant < 0:
        raise ValueError(f"n_target must be >= 1 and n_assistant >= 0, got {n_target} and {n_assistant}")
    params = {
        "version": PHANTOM_VERSION, "target": target, "assistant": assistant, "n_target": n_target,
        "n_assistant": n_assistant, "image_size": image_size, "n_slices": n_slices, "seed": seed,
    }
    counts = {target: n_target, assistant: n_assistant}
    cache = SliceCache(root, source=PHANTOM_SOURCE)
    wanted = {f"{m}/{i:03d}" for m, n in counts.items() for i in range(n)}
    if cache.exists:
        if cache.source != PHANTOM_SOURCE:
            raise ValueError(f"{root}: holds a {cache.source!r} slice cache, not a phantom; not overwriting it")
        if set(cache.records) == wanted and all(r.extra.get("phantom") == params for r in cache.records.values()):
            return cache
        _clear(cache)

    for modality, n in counts.items():
        role = "target" if modality == target else "assistant"
        for i in range(n):
            anatomy_seed = subject_seed(seed, modality, i)
            image, label = render_subject(anatomy_seed, modality, image_size, n_slices)
            extra = {"phantom": params, "role": role, "anatomy_seed": anatomy_seed}
            cache.write_volume(_record(f"{i:03d}", modality, image.shape, extra), image, label)
    cache.structures = preset_structures(MMWHS, [target, assistant])
    cache.roles = {"target": target, "assistant": assistant}
    cache.save()
    return cache


def _record(subject: str, modality: str, shape: tuple[int, ...], extra: dict) -> VolumeRecord:
    """A phantom volume's record: its grid is the original scan (1 mm voxels, identity affine)."""
    return VolumeRecord(
        subject=subject, modality=modality, n_slices=shape[0], image_file="",  # file names: write_volume
        spacing=(1.0, 1.0, 1.0), original_shape=tuple(shape), affine=np.eye(4).tolist(),
        slice_indices=list(range(shape[0])), plane=PLANE, extra=extra,
    )


def _clear(cache: SliceCache) -> None:
    """Forget a stale phantom cache: the manifest first, so no reader trusts half-rewritten files."""
    (cache.root / MANIFEST).unlink(missing_ok=True)
    for record in cache.records.values():
        for name in (record.image_file, record.label_file):
            if name:
                (cache.root / name).unlink(missing_ok=True)
    cache.records.clear()
    cache.source = PHANTOM_SOURCE
