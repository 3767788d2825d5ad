"""Small synthetic competitions in Kaggle's exact layout, for tests and for the demo.

`make_competition` writes `facial-keypoints-detection.zip` (training.zip, test.zip,
IdLookupTable.csv, SampleSubmission.csv) and `solution.csv` with the truth for every lookup row,
so the whole pipeline (unpack, parse, train, submit, score) runs without Kaggle.

The faces are drawn with numpy, all faces at once: every pixel is mapped back into a canonical
96x96 face frame (undoing the face's shift, scale and rotation) and each feature (face ellipse,
eyes, eyebrows, nose, lips) is a soft mask over those canonical coordinates. Labels are the
canonical keypoints mapped forward by the same pose, so they sit exactly on the drawn features.

As in Kaggle's data, rows come from two annotation sources:
- "full": all 15 keypoints (a few rows miss 1 or 2 of the non-core ones);
- "core": only the 4 core keypoints, framed a little differently (a larger face, a little
  lower in the frame) and with the bottom lip marked a little lower than its drawn edge.
The test set's first block is drawn like the full source and asks all 30 values; the rest is
drawn like the core source and asks the 8 core values.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from kit.core.errors import KitError
from kit.core.fileio import write_bytes, write_text
from kit.core.keypoints import COLUMNS, CORE_COLUMNS, CORE_KEYPOINTS, IMAGE_SIZE, KEYPOINT_NAMES

ARCHIVE_NAME = "facial-keypoints-detection.zip"
SOLUTION_NAME = "solution.csv"

# Share of full-source training rows that miss 1 or 2 non-core keypoints (4% in the real data).
PARTIAL_FRACTION = 0.06
# Every label lies inside [KEYPOINT_MARGIN, IMAGE_SIZE - 1 - KEYPOINT_MARGIN] (= [2.5, 92.5]).
KEYPOINT_MARGIN = 2.5
# How much lower (canonical pixels) the core source marks the bottom lip than its drawn edge.
CORE_BOTTOM_LIP_OFFSET = 2.5
# A fixed timestamp in the zip members, so the same seed gives the same archive bytes.
ZIP_DATE_TIME = (2013, 5, 7, 0, 0, 0)

# The mean face of the practice data, in Kaggle's keypoint order ("left" is the person's left,
# the image's right).
TEMPLATE = np.array(
    [
        [64.2, 39.0],  # left_eye_center
        [31.9, 39.3],  # right_eye_center
        [58.4, 37.9],  # left_eye_inner_corner
        [71.2, 37.2],  # left_eye_outer_corner
        [38.2, 38.2],  # right_eye_inner_corner
        [25.5, 37.7],  # right_eye_outer_corner
        [57.7, 26.5],  # left_eyebrow_inner_end
        [78.2, 28.8],  # left_eyebrow_outer_end
        [38.4, 26.9],  # right_eyebrow_inner_end
        [17.9, 29.4],  # right_eyebrow_outer_end
        [48.9, 58.4],  # nose_tip
        [62.3, 74.8],  # mouth_left_corner
        [35.2, 75.1],  # mouth_right_corner
        [49.0, 70.9],  # mouth_center_top_lip
        [49.0, 80.0],  # mouth_center_bottom_lip
    ]
)
_K = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
_CENTRE = (IMAGE_SIZE - 1) / 2.0
_NON_CORE = np.array([_K[name] for name in KEYPOINT_NAMES if name not in CORE_KEYPOINTS])
_DIGITS = np.array([str(value) for value in range(256)], dtype=object)

# Pose per source: (scale low, scale high), vertical shift of the frame in pixels.
_SOURCE_FRAMING = {"full": ((0.90, 1.04), 0.0), "core": ((0.98, 1.12), 1.5)}
_MAX_SHIFT = 3.0
_MAX_ROTATION_DEGREES = 10.0
_RENDER_CHUNK = 32


def make_faces(
    n: int, seed: int | np.random.Generator = 0, source: str = "full"
) -> tuple[np.ndarray, np.ndarray]:
    """Draw n faces: images uint8 (n, 96, 96) and keypoints float64 (n, 30) in Kaggle's order.

    Every face carries all 30 values here; `source` ("full" or "core") picks the framing and the
    bottom-lip convention. `make_competition` masks what each source does not annotate.
    """
    if source not in _SOURCE_FRAMING:
        raise KitError(f"synthetic face source {source!r}: expected 'full' or 'core'")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    canonical, shape = _sample_geometry(rng, n)
    scale, rotation, shift = _sample_pose(rng, canonical, source)
    look = _sample_look(rng, n)
    noise = rng.standard_normal((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    noise *= look["noise"].astype(np.float32)[:, None, None]
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    # A few faces at a time: the (chunk, 96, 96) temporaries stay in cache, twice as fast.
    for start in range(0, n, _RENDER_CHUNK):
        part = slice(start, start + _RENDER_CHUNK)
        drawn = _render(canonical[part], {key: value[part] for key, value in shape.items()},
                        {key: value[part] for key, value in look.items()},
                        scale[part], rotation[part], shift[part])
        images[part] = np.clip(np.rint(drawn + noise[part]), 0, 255)
    labels = canonical.copy()
    if source == "core":
        labels[:, _K["mouth_center_bottom_lip"], 1] += CORE_BOTTOM_LIP_OFFSET
    keypoints = _to_image(labels, scale, rotation, shift)
    return images, keypoints.reshape(n, 2 * len(KEYPOINT_NAMES))


def make_competition(
    out_dir: Path | str,
    n_train: int = 240,
    n_test: int = 60,
    seed: int = 0,
    complete_fraction: float = 0.35,
    full_test_fraction: float = 0.35,
) -> dict:
    """Write a synthetic competition into out_dir: Kaggle's zip and solution.csv.

    round(n_train * complete_fraction) training rows come from the full source (a few of them
    miss 1 or 2 keypoints), the rest carry only the 8 core values; the first
    round(n_test * full_test_fraction) test images ask all 30 values, the rest the 8 core ones.
    Returns a summary: the paths and the counts.
    """
    if n_train < 1 or n_test < 1:
        raise KitError(f"synthetic competition: n_train={n_train}, n_test={n_test}; expected >= 1")
    for name, value in (("complete_fraction", complete_fraction),
                        ("full_test_fraction", full_test_fraction)):
        if not 0.0 <= value <= 1.0:
            raise KitError(f"synthetic competition: {name}={value}; expected a value in [0, 1]")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)

    n_full_train = round(n_train * complete_fraction)
    n_partial = round(n_full_train * PARTIAL_FRACTION)
    n_full_test = round(n_test * full_test_fraction)

    # Training: the two sources interleaved, as in Kaggle's training.csv.
    train_images, train_keypoints = _two_sources(rng, n_full_train, n_train - n_full_train)
    order = rng.permutation(n_train)
    train_images, train_keypoints = train_images[order], train_keypoints[order]
    is_full = order < n_full_train
    core_mask = np.isin(np.arange(len(COLUMNS)), [COLUMNS.index(c) for c in CORE_COLUMNS])
    train_keypoints[np.ix_(~is_full, ~core_mask)] = np.nan
    for row in rng.choice(np.flatnonzero(is_full), size=n_partial, replace=False):
        missing = rng.choice(_NON_CORE, size=rng.integers(1, 3), replace=False)
        for index in missing:
            train_keypoints[row, 2 * index: 2 * index + 2] = np.nan

    # Test: the full-source block first, then the core-source block.
    test_images, test_keypoints = _two_sources(rng, n_full_test, n_test - n_full_test)

    training_csv = _training_csv(train_images, train_keypoints)
    test_csv = _test_csv(test_images)
    lookup_rows = _lookup_rows(n_test, n_full_test)
    lookup_csv = "RowId,ImageId,FeatureName,Location\n" + "".join(
        f"{row_id},{image_id},{column},\n" for row_id, image_id, column in lookup_rows
    )
    sample_csv = "RowId,Location\n" + "".join(f"{row_id},0\n" for row_id, _, _ in lookup_rows)
    solution_csv = "RowId,Location\n" + "".join(
        f"{row_id},{float(test_keypoints[image_id - 1, COLUMNS.index(column)])!r}\n"
        for row_id, image_id, column in lookup_rows
    )

    archive = _zip_bytes({
        "training.zip": _zip_bytes({"training.csv": training_csv.encode()}),
        "test.zip": _zip_bytes({"test.csv": test_csv.encode()}),
        "IdLookupTable.csv": lookup_csv.encode(),
        "SampleSubmission.csv": sample_csv.encode(),
    })
    archive_path = write_bytes(out_dir / ARCHIVE_NAME, archive)
    solution_path = write_text(out_dir / SOLUTION_NAME, solution_csv)
    n_complete = int(np.isfinite(train_keypoints).all(axis=1).sum())
    return {
        "archive": archive_path,
        "solution": solution_path,
        "seed": seed,
        "n_train": n_train,
        "n_train_complete": n_complete,  # all 30 values
        "n_train_partial": n_partial,  # full source, missing 1 or 2 keypoints
        "n_train_core": n_train - n_full_train,  # only the 8 core values
        "n_test": n_test,
        "n_test_full": n_full_test,  # ask all 30 values
        "n_test_core": n_test - n_full_test,  # ask the 8 core values
        "n_lookup_rows": len(lookup_rows),
    }


# ---------------------------------------------------------------------------------------------
# Geometry and pose


def _sample_geometry(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    """Canonical keypoints (n, 15, 2) varied per person, and the sizes of the drawn features."""
    points = np.broadcast_to(TEMPLATE, (n, *TEMPLATE.shape)).copy()
    x, y = points[..., 0], points[..., 1]

    def draw(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, size=(n, 1))

    eyes = [_K[k] for k in ("left_eye_center", "right_eye_center", "left_eye_inner_corner",
                             "left_eye_outer_corner", "right_eye_inner_corner",
                             "right_eye_outer_corner")]
    brows = [_K[k] for k in ("left_eyebrow_inner_end", "left_eyebrow_outer_end",
                              "right_eyebrow_inner_end", "right_eyebrow_outer_end")]
    mouth = [_K[k] for k in ("mouth_left_corner", "mouth_right_corner", "mouth_center_top_lip",
                              "mouth_center_bottom_lip")]
    upper = eyes + brows
    # Eye spacing, eyebrow height, nose length, mouth width and height: one draw per person.
    x[:, upper] = 48.0 + (x[:, upper] - 48.0) * draw(0.92, 1.08)
    y[:, upper] += draw(-1.5, 1.5)
    y[:, brows] += draw(-2.0, 1.5)
    y[:, [_K["nose_tip"]]] += draw(-2.5, 2.5)
    mouth_centre = x[:, mouth].mean(axis=1, keepdims=True)
    x[:, mouth] = mouth_centre + (x[:, mouth] - mouth_centre) * draw(0.85, 1.15)
    y[:, mouth] += draw(-2.0, 2.5)
    y[:, [_K["mouth_center_top_lip"]]] += draw(-1.0, 1.0)
    y[:, [_K["mouth_center_bottom_lip"]]] += draw(-1.0, 1.5)
    # A head turned a little: the nose moves most, the mouth half as much.
    yaw = draw(-1.0, 1.0)
    x[:, [_K["nose_tip"]]] += 4.0 * yaw
    x[:, mouth] += 2.0 * yaw
    # Gaze: the eye centres move together inside the eyes.
    gaze = draw(-1.2, 1.2)
    x[:, [_K["left_eye_center"], _K["right_eye_center"]]] += gaze
    points += rng.normal(0.0, 0.4, size=points.shape)

    shape = {
        "face_axes": np.concatenate([draw(34.0, 39.0), draw(44.0, 50.0)], axis=1),
        "eye_height": draw(2.4, 3.4),
        "iris_radius": draw(2.2, 2.9),
        "brow_thickness": draw(1.2, 2.0),
        "hair_line": draw(10.0, 18.0),
    }
    return points, shape


def _sample_pose(
    rng: np.random.Generator, canonical: np.ndarray, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale (n,), rotation in radians (n,), shift (n, 2); redrawn until every label fits."""
    n = len(canonical)
    (scale_low, scale_high), drop = _SOURCE_FRAMING[source]
    scale = np.empty(n)
    rotation = np.empty(n)
    shift = np.empty((n, 2))
    # The core source's bottom lip is marked lower: keep that label inside the frame too.
    labels = canonical.copy()
    labels[:, _K["mouth_center_bottom_lip"], 1] += CORE_BOTTOM_LIP_OFFSET
    pending = np.arange(n)
    for attempt in range(50):
        m = len(pending)
        if attempt < 49:
            scale[pending] = rng.uniform(scale_low, scale_high, m)
            rotation[pending] = np.deg2rad(rng.uniform(-1, 1, m) * _MAX_ROTATION_DEGREES)
            shift[pending] = rng.uniform(-_MAX_SHIFT, _MAX_SHIFT, (m, 2)) + [0.0, drop]
        else:  # the last try: an upright face of the smallest scale, centred
            scale[pending], rotation[pending], shift[pending] = scale_low, 0.0, [0.0, drop]
        placed = _to_image(labels[pending], scale[pending], rotation[pending], shift[pending])
        fits = ((placed >= KEYPOINT_MARGIN) & (placed <= IMAGE_SIZE - 1 - KEYPOINT_MARGIN))
        pending = pending[~fits.all(axis=(1, 2))]
        if len(pending) == 0:
            break
    return scale, rotation, shift


def _to_image(
    points: np.ndarray, scale: np.ndarray, rotation: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Canonical points (n, k, 2) -> image points: rotate and scale about the centre, shift."""
    cos, sin = np.cos(rotation)[:, None], np.sin(rotation)[:, None]
    dx, dy = points[..., 0] - _CENTRE, points[..., 1] - _CENTRE
    s = scale[:, None]
    x = _CENTRE + s * (cos * dx - sin * dy) + shift[:, None, 0]
    y = _CENTRE + s * (sin * dx + cos * dy) + shift[:, None, 1]
    return np.stack([x, y], axis=-1)


# ---------------------------------------------------------------------------------------------
# Drawing


def _sample_look(rng: np.random.Generator, n: int) -> dict:
    """Per-face intensities: skin, background, hair, contrast, brightness and noise levels."""
    dark_background = rng.random(n) < 0.5
    return {
        "skin": rng.uniform(120, 200, n),
        "background": np.where(dark_background, rng.uniform(20, 80, n), rng.uniform(200, 245, n)),
        "gradient": rng.uniform(-0.6, 0.6, (n, 2)),
        "hair": rng.uniform(15, 70, n),
        "contrast": rng.uniform(0.75, 1.2, n),
        "brightness": rng.uniform(-20, 20, n),
        "noise": rng.uniform(2.0, 7.0, n),
    }


def _render(
    canonical: np.ndarray,
    shape: dict,
    look: dict,
    scale: np.ndarray,
    rotation: np.ndarray,
    shift: np.ndarray,
) -> np.ndarray:
    """Draw faces without noise: float32 (n, 96, 96). Each feature is a soft mask over the
    canonical coordinates of every pixel; the work is elementwise over (n, 96, 96) arrays."""
    n = len(canonical)
    f32 = np.float32

    def per_face(values) -> np.ndarray:
        return np.asarray(values, dtype=f32).reshape(n, 1, 1)

    def point(name: str) -> tuple[np.ndarray, np.ndarray]:
        index = _K[name]
        return per_face(canonical[:, index, 0]), per_face(canonical[:, index, 1])

    def paint(image: np.ndarray, alpha: np.ndarray, value) -> None:
        image += alpha * (value - image)

    grid = np.arange(IMAGE_SIZE, dtype=f32)
    # Pixel centres are at integer coordinates: image[row, column] sits at (x=column, y=row).
    py, px = grid[None, :, None], grid[None, None, :]
    cos, sin, s = per_face(np.cos(rotation)), per_face(np.sin(rotation)), per_face(scale)
    dx = px - f32(_CENTRE) - per_face(shift[:, 0])
    dy = py - f32(_CENTRE) - per_face(shift[:, 1])
    # The inverse of _to_image: canonical coordinates (u, v) of every pixel, (n, 96, 96) each.
    u = f32(_CENTRE) + (cos * dx + sin * dy) / s
    v = f32(_CENTRE) + (cos * dy - sin * dx) / s

    # Background: a level and a gradient, darker or lighter than the skin.
    skin = per_face(look["skin"])
    image = (per_face(look["background"]) + per_face(look["gradient"][:, 0]) * (px - f32(_CENTRE))
             + per_face(look["gradient"][:, 1]) * (py - f32(_CENTRE)))

    # Face: an ellipse centred below the eyes, its chin below the frame as in Kaggle's crops.
    axis_x, axis_y = per_face(shape["face_axes"][:, 0]), per_face(shape["face_axes"][:, 1])
    face_x = (point("left_eye_center")[0] + point("right_eye_center")[0]) / 2
    radius = np.sqrt(((u - face_x) / axis_x) ** 2 + ((v - f32(56.0)) / axis_y) ** 2)
    face = np.clip((1.0 - radius) * axis_x / 1.5 + 0.5, 0.0, 1.0)
    # Shading: a little darker towards the face's edge.
    paint(image, face, skin * (1.05 - 0.2 * np.minimum(radius, 1.0) ** 2))
    # Hair above a hair line that curves down at the temples.
    hair_line = per_face(shape["hair_line"][:, 0]) + 10.0 * ((u - face_x) / axis_x) ** 2
    paint(image, face * np.clip(hair_line - v + 0.5, 0.0, 1.0), per_face(look["hair"]))

    # Eyebrows: dark strokes from inner to outer end.
    brow_thickness = per_face(shape["brow_thickness"][:, 0])
    for side in ("left", "right"):
        distance = _segment_distance(u, v, *point(f"{side}_eyebrow_inner_end"),
                                     *point(f"{side}_eyebrow_outer_end"))
        paint(image, np.clip(brow_thickness - distance + 0.5, 0.0, 1.0), skin * 0.35)

    # Eyes: a bright almond from corner to corner with a dark lid line, a dark iris at the centre.
    eye_height = per_face(shape["eye_height"][:, 0])
    iris_radius = per_face(shape["iris_radius"][:, 0])
    for side in ("left", "right"):
        corners = (*point(f"{side}_eye_inner_corner"), *point(f"{side}_eye_outer_corner"))
        almond = _almond(u, v, *corners, eye_height, eye_height)
        white = _almond(u, v, *corners, eye_height - 0.9, eye_height - 0.9)
        paint(image, almond, skin * 0.4)
        paint(image, white, np.minimum(skin + 50, 250))
        cx, cy = point(f"{side}_eye_center")
        iris = np.clip(iris_radius - np.sqrt((u - cx) ** 2 + (v - cy) ** 2) + 0.5, 0.0, 1.0)
        paint(image, iris * np.minimum(almond + 0.35, 1.0), f32(25.0))

    # Nose: a bright tip, two dark nostrils beside and below it, a shadow up one side.
    nx, ny = point("nose_tip")
    paint(image, 0.5 * np.exp(((u - nx) ** 2 + (v - ny) ** 2) * f32(-1 / (2 * 2.2**2))),
          skin + 40)
    for side in (-1.0, 1.0):
        nostril = ((u - nx - f32(side * 3.8)) ** 2 + (v - ny - f32(2.2)) ** 2) * f32(-1 / 3.4)
        paint(image, 0.9 * np.exp(nostril), skin * 0.3)
    bridge = _segment_distance(u, v, nx + 2.5, ny - 2.0, face_x + 1.5, ny - 16.0)
    paint(image, 0.35 * np.clip(1.5 - bridge, 0.0, 1.0), skin * 0.6)

    # Mouth: lips between the corners out to the top and bottom lip edges, a dark line between.
    left, right = point("mouth_left_corner"), point("mouth_right_corner")
    mid_y = (left[1] + right[1]) / 2
    top = mid_y - point("mouth_center_top_lip")[1]
    bottom = point("mouth_center_bottom_lip")[1] - mid_y
    paint(image, _almond(u, v, *right, *left, top, bottom), skin * 0.6)
    paint(image, _almond(u, v, *right, *left, f32(0.8), f32(0.8)), f32(20.0))

    return (image - 128.0) * per_face(look["contrast"]) + 128.0 + per_face(look["brightness"])


def _segment_distance(u, v, ax, ay, bx, by) -> np.ndarray:
    """Distance from every pixel to the segment a-b."""
    ex, ey = bx - ax, by - ay
    t = np.clip(((u - ax) * ex + (v - ay) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    return np.sqrt((u - ax - t * ex) ** 2 + (v - ay - t * ey) ** 2)


def _almond(u, v, ax, ay, bx, by, height_above, height_below) -> np.ndarray:
    """A soft mask between corners a and b: a parabola height_above over the a-b line, one
    height_below under it (below: towards larger y when a is left of b)."""
    mx, my = (ax + bx) / 2, (ay + by) / 2
    ex, ey = bx - mx, by - my
    half_length = np.sqrt(ex * ex + ey * ey)
    ex, ey = ex / half_length, ey / half_length
    along = ((u - mx) * ex + (v - my) * ey) / half_length  # -1 at a, +1 at b
    across = (u - mx) * -ey + (v - my) * ex  # positive below the line
    width = np.maximum(1.0 - along * along, 0.0)
    inside = np.minimum(across + height_above * width, height_below * width - across)
    ends = np.clip((1.0 - np.abs(along)) * half_length + 0.5, 0.0, 1.0)
    return np.clip(inside + 0.5, 0.0, 1.0) * ends


def _two_sources(rng: np.random.Generator, n_full: int, n_core: int):
    """n_full faces of the full source followed by n_core of the core source."""
    parts = [make_faces(n, rng, source) for n, source in ((n_full, "full"), (n_core, "core"))]
    return (np.concatenate([images for images, _ in parts]),
            np.concatenate([keypoints for _, keypoints in parts]))


# ---------------------------------------------------------------------------------------------
# Files


def _image_field(image: np.ndarray) -> str:
    return " ".join(_DIGITS[image.ravel()])


def _number(value: float) -> str:
    # Kaggle prints up to 6 decimals; a missing value is an empty field.
    return "" if np.isnan(value) else repr(round(float(value), 6))


def _training_csv(images: np.ndarray, keypoints: np.ndarray) -> str:
    lines = [",".join((*COLUMNS, "Image"))]
    for image, values in zip(images, keypoints):
        lines.append(",".join([*(_number(value) for value in values), _image_field(image)]))
    return "\n".join(lines) + "\n"


def _test_csv(images: np.ndarray) -> str:
    lines = ["ImageId,Image"]
    lines += [f"{image_id},{_image_field(image)}" for image_id, image in enumerate(images, 1)]
    return "\n".join(lines) + "\n"


def _lookup_rows(n_test: int, n_full_test: int) -> list[tuple[int, int, str]]:
    """(RowId, ImageId, FeatureName): ImageId-major, features in Kaggle's column order."""
    asked = [(image_id, column) for image_id in range(1, n_test + 1)
             for column in (COLUMNS if image_id <= n_full_test else CORE_COLUMNS)]
    return [(row_id, image_id, column) for row_id, (image_id, column) in enumerate(asked, 1)]


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            # Level 1: noisy images barely compress, so the default level's extra work buys little.
            archive.writestr(info, data, compresslevel=1)
    return buffer.getvalue()
