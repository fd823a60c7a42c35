"""Real photographs shipped inside installed packages (scikit-image, scikit-learn).

A few colour photos need no download; random crops at random scales make many different
training samples from them, and seeded crops make a fixed evaluation set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dcgd.errors import DataError


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle is a pair

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


# Colour photographs only (the gray test images would teach the model to desaturate), all
# stored inside the packages: skimage.data functions that need pooch are left out.
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "hubble": _skimage("hubble_deep_field"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
}

_cache: dict[str, np.ndarray] = {}


def load_photo(name: str) -> np.ndarray:
    """Photo ``name`` as ``uint8`` [H,W,3] (cached per process)."""
    if name not in _cache:
        try:
            image = PHOTOS[name]()
        except KeyError:
            raise DataError(
                f"no built-in photo {name!r}; choose from {', '.join(PHOTOS)}"
            ) from None
        except (ImportError, OSError, ModuleNotFoundError) as err:
            raise DataError(
                f"built-in photo {name!r} could not be loaded ({err}); reinstall scikit-image "
                "and scikit-learn, or use dataset: procedural"
            ) from None
        _cache[name] = np.ascontiguousarray(image[..., :3].astype(np.uint8))
    return _cache[name]


def available_photos() -> list[str]:
    """Names of the photos that load here (all of them on a normal install)."""
    names = []
    for name in PHOTOS:
        try:
            load_photo(name)
        except DataError:
            continue
        names.append(name)
    return names
