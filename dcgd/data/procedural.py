"""Built-in procedural scenes: textured backgrounds with several similar labelled objects.

Needs no download, so the quick start and the tests always have data. Each scene is one of a
few background classes ("brick wall", "grass field", ...) holding 2-5 objects of one class
("blue square", ...): the paper's hard case, where the object to remove has look-alikes
around it. Everything is drawn with vectorised numpy / cv2 and is a function of the random
generator it is given, so a scene is fixed by ``(index, seed)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from dcgd.errors import ConfigError

SCENE_NAMES = ("grass field", "brick wall", "sandy beach", "water", "cloudy sky", "tiled floor")

# name -> (RGB colour, shape). Colours and shapes both differ, so even a tiny CLIP at 64x64
# has two cues to tell the classes apart.
OBJECT_CLASSES: dict[str, tuple[tuple[int, int, int], str]] = {
    "red circle": ((215, 35, 35), "circle"),
    "blue square": ((35, 70, 215), "square"),
    "yellow triangle": ((240, 215, 30), "triangle"),
    "green star": ((40, 185, 60), "star"),
    "orange diamond": ((245, 135, 20), "diamond"),
    "purple cross": ((140, 45, 185), "cross"),
    "white heart": ((245, 245, 245), "heart"),
    "black hexagon": ((25, 25, 25), "hexagon"),
}
OBJECT_NAMES = tuple(OBJECT_CLASSES)
PLURALS = {name: name + ("es" if name.endswith("cross") else "s") for name in OBJECT_NAMES}

MIN_SCENE_SIZE = 8

# A context object still counts as "in the scene" when at least this much of it is visible.
VISIBLE_FRACTION = 0.5


@dataclass
class PlacedObject:
    """An object drawn into a scene: its class, top-left corner and alpha patch (0..1)."""

    label: str
    x: int
    y: int
    alpha: np.ndarray


@dataclass
class Scene:
    """A rendered background with its labels (the clean target of a pair)."""

    image: np.ndarray  # uint8 [H,W,3]
    scene: str
    objects: list[PlacedObject] = field(default_factory=list)

    def visible_objects(self, mask: np.ndarray) -> list[PlacedObject]:
        """Context objects that stay mostly visible outside ``mask`` (0/1 [H,W])."""
        visible = []
        for obj in self.objects:
            h, w = obj.alpha.shape
            inside = obj.alpha > 0
            total = int(np.count_nonzero(inside))
            region = mask[obj.y : obj.y + h, obj.x : obj.x + w]
            shown = int(np.count_nonzero(inside & (region == 0)))
            if total and shown >= VISIBLE_FRACTION * total:
                visible.append(obj)
        return visible

    def label(self, mask: np.ndarray) -> str:
        """E.g. ``"brick wall with blue squares"``, naming only objects the mask leaves visible.

        Computed from the scene layout and the mask, never from pixels under the mask, so it
        cannot leak what the hole hides.
        """
        names = sorted({obj.label for obj in self.visible_objects(mask)})
        if not names:
            return self.scene
        return f"{self.scene} with " + " and ".join(PLURALS[n] for n in names)


def _smooth_noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """Value noise in [0,1]: a coarse random grid upsampled with bicubic interpolation."""
    grid = rng.random(cells, dtype=np.float32)
    return np.clip(cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.arange(size, dtype=np.float32) / size
    return axis[None, :], axis[:, None]  # x as a row, y as a column (broadcast to [H,W])


def _colour(base: tuple[float, float, float], shade: np.ndarray) -> np.ndarray:
    return shade[..., None] * np.asarray(base, np.float32)


def _grass(rng: np.random.Generator, size: int) -> np.ndarray:
    blades = _smooth_noise(rng, size, (4, max(4, size // 3)))  # long vertical streaks
    patches = _smooth_noise(rng, size, (4, 4))
    shade = 0.55 + 0.35 * blades + 0.25 * patches
    return _colour((70, 150, 45), shade)


def _bricks(rng: np.random.Generator, size: int) -> np.ndarray:
    rows = int(rng.integers(5, 9))
    brick_h = size / rows
    brick_w = brick_h * 2.2
    x, y = _coords(size)
    row = np.floor(y * size / brick_h)
    shifted = x * size / brick_w + 0.5 * (row % 2)
    col = np.floor(shifted)
    tone = rng.uniform(0.75, 1.1, size=(rows + 1, int(size / brick_w) + 3)).astype(np.float32)
    shade = tone[row.astype(int), col.astype(int)]
    fy = y * size / brick_h - row
    fx = shifted - col
    mortar = (fy < 0.1) | (fx < 0.05)
    image = _colour((165, 70, 50), shade * (0.9 + 0.1 * _smooth_noise(rng, size, (8, 8))))
    image[np.broadcast_to(mortar, (size, size))] = (190, 185, 175)
    return image


def _sand(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _coords(size)
    ripples = np.sin((y * 18 + 2 * _smooth_noise(rng, size, (3, 3))) * 2 * math.pi)
    grain = rng.random((size, size), dtype=np.float32)
    shade = 0.85 + 0.06 * ripples + 0.1 * grain
    return _colour((215, 190, 140), shade)


def _water(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _coords(size)
    warp = _smooth_noise(rng, size, (4, 4))
    waves = np.sin((y * 14 + x * 3 + 1.5 * warp) * 2 * math.pi)
    shade = 0.8 + 0.15 * waves + 0.1 * warp
    image = _colour((35, 95, 170), shade)
    image += 60 * np.clip(waves - 0.85, 0, None)[..., None] / 0.15  # glints on wave crests
    return image


def _sky(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _coords(size)
    blue = _colour((90, 150, 230), np.broadcast_to(0.8 + 0.25 * y, (size, size)))
    clouds = _smooth_noise(rng, size, (5, 5)) * 0.7 + _smooth_noise(rng, size, (11, 11)) * 0.3
    cover = np.clip((clouds - 0.45) * 4.0, 0.0, 1.0)[..., None]
    return blue * (1 - cover) + np.float32(245) * cover


def _tiles(rng: np.random.Generator, size: int) -> np.ndarray:
    n = int(rng.integers(3, 7))
    x, y = _coords(size)
    tx, ty = np.floor(x * n), np.floor(y * n)
    checker = ((tx + ty) % 2).astype(np.float32)
    light = np.asarray(rng.uniform(200, 235, 3), np.float32)
    dark = light * np.float32(rng.uniform(0.55, 0.75))
    image = dark + checker[..., None] * (light - dark)
    grout = ((x * n - tx) < 0.05) | ((y * n - ty) < 0.05)
    image = image * (0.95 + 0.05 * _smooth_noise(rng, size, (6, 6)))[..., None]
    image[np.broadcast_to(grout, (size, size))] = (110, 105, 100)
    return image


_TEXTURES = {
    "grass field": _grass,
    "brick wall": _bricks,
    "sandy beach": _sand,
    "water": _water,
    "cloudy sky": _sky,
    "tiled floor": _tiles,
}


def render_background(scene: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """The texture of ``scene`` as float32 [H,W,3] in 0..255."""
    return np.asarray(_TEXTURES[scene](rng, size), np.float32)


def _unit_polygon(shape: str) -> np.ndarray:
    """Outline of ``shape`` in [-1,1]^2, y down."""
    if shape == "square":
        return np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])
    if shape == "triangle":
        return np.array([[0.0, -0.95], [0.95, 0.8], [-0.95, 0.8]])
    if shape == "diamond":
        return np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]])
    if shape == "cross":
        a, b = 0.3, 0.95
        return np.array(
            [[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a]]
            + [[-b, a], [-b, -a], [-a, -a]]
        )
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    if shape == "circle":
        return np.stack([np.cos(t), np.sin(t)], 1) * 0.95
    if shape == "hexagon":
        t = np.arange(6) * np.pi / 3
        return np.stack([np.cos(t), np.sin(t)], 1) * 0.95
    if shape == "star":
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(t), r * np.sin(t) + 0.08], 1)
    if shape == "heart":
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x, y + 2.5], 1) / 17.5
    raise ValueError(f"unknown shape {shape!r}")


_POLYGONS = {shape: _unit_polygon(shape) for _, shape in OBJECT_CLASSES.values()}
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly: smooth edges on tiny objects


def render_object(label: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """Object ``label`` as a ``uint8`` RGBA patch of ``side`` x ``side`` (anti-aliased alpha)."""
    colour, shape = OBJECT_CLASSES[label]
    side = max(3, int(side))
    angle = float(rng.uniform(-0.25, 0.25))  # a small tilt; a square rotated 45 deg is a diamond
    cos, sin = math.cos(angle), math.sin(angle)
    points = _POLYGONS[shape] @ np.array([[cos, sin], [-sin, cos]])
    points = (points * 0.5 + 0.5) * (side - 1)
    fixed = np.round(points * (1 << _SHIFT)).astype(np.int32)
    alpha = np.zeros((side, side), np.uint8)
    cv2.fillPoly(alpha, [fixed], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    # A light-from-top-left gradient so objects read as things, not flat stickers.
    x, y = _coords(side)
    shade = 1.1 - 0.3 * (x + y) / 2 + float(rng.uniform(-0.05, 0.05))
    rgb = np.clip(shade[..., None] * np.asarray(colour, np.float32), 0, 255).astype(np.uint8)
    return np.dstack([rgb, alpha])


def composite(canvas: np.ndarray, rgba: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend ``rgba`` onto float ``canvas`` [H,W,3] at top-left ``(x, y)``, in place."""
    h, w = rgba.shape[:2]
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    region = canvas[y : y + h, x : x + w]
    region *= 1.0 - alpha
    region += alpha * rgba[..., :3]


# Spots tried per object before it is allowed to overlap the others: a crowded scene must not
# search forever for a free spot that may not exist.
PLACEMENT_TRIES = 10


def _place(
    rng: np.random.Generator, size: int, side: int, taken: list[tuple[int, int, int]]
) -> tuple[int, int]:
    """A top-left corner for a ``side`` square, avoiding earlier squares when it can (at most
    ``PLACEMENT_TRIES`` draws; then the last one, overlapping)."""
    for _ in range(PLACEMENT_TRIES):
        x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        if all(
            abs(x - tx) >= (side + ts) // 2 or abs(y - ty) >= (side + ts) // 2
            for tx, ty, ts in taken
        ):
            break
    return x, y


def render_scene(rng: np.random.Generator, size: int) -> Scene:
    """A background of a random scene class with 2-5 objects of one random class."""
    if size < MIN_SCENE_SIZE:
        # Objects are at least 4 px: below 8 they would not fit (a numpy error deep inside).
        raise ConfigError(f"procedural scenes need size >= {MIN_SCENE_SIZE} pixels, got {size}")
    scene = SCENE_NAMES[int(rng.integers(len(SCENE_NAMES)))]
    label = OBJECT_NAMES[int(rng.integers(len(OBJECT_NAMES)))]
    canvas = render_background(scene, rng, size)
    objects: list[PlacedObject] = []
    taken: list[tuple[int, int, int]] = []
    for _ in range(int(rng.integers(2, 6))):
        side = max(4, int(round(size * float(rng.uniform(0.12, 0.2)))))
        rgba = render_object(label, side, rng)
        x, y = _place(rng, size, side, taken)
        composite(canvas, rgba, x, y)
        taken.append((x, y, side))
        objects.append(PlacedObject(label, x, y, rgba[..., 3].astype(np.float32) / 255.0))
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Scene(image=image, scene=scene, objects=objects)


def alpha_fill(label: str) -> float:
    """Fraction of its square patch an object's silhouette covers (for sizing pastes)."""
    return _FILL[label]


def _fill_fraction(label: str) -> float:
    alpha = render_object(label, 128, np.random.default_rng(0))[..., 3]
    return float(np.count_nonzero(alpha)) / alpha.size


_FILL = {label: _fill_fraction(label) for label in OBJECT_NAMES}
