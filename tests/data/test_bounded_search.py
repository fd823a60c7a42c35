"""Every generator loop that searches (masks into a bucket, objects into a scene or a bucket)
is bounded: settings it cannot satisfy end in a one-line error naming the setting, never in a
process spinning at 100% CPU. Tests carry a timeout, so a regression fails instead of hanging.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dcgd.data.buckets import Bucket, parse_bucket
from dcgd.data.masks import MaskSettings, generate_mask, seeded_rng
from dcgd.errors import ConfigError

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("text", ["0.9-1.5", "1.2-1.5", "0.5-2"])
def test_a_bucket_beyond_a_full_mask_is_refused(text):
    # A ratio above 1 is a pixel count no mask has: the mask search would add shapes forever.
    with pytest.raises(ValueError, match=r"0 <= LO < HI <= 1"):
        parse_bucket(text)
    lo, hi = text.split("-")
    with pytest.raises(ValueError, match=r"0 <= LO < HI <= 1"):
        Bucket(lo, hi)


def test_buckets_up_to_a_full_mask_still_work():
    assert parse_bucket("0.9-1").bounds == (0.9, 1.0)
    assert parse_bucket("0-0.1").bounds == (0.0, 0.1)
    mask = generate_mask(seeded_rng(0), (32, 32), parse_bucket("0.9-1.0"))
    assert 0.9 <= mask.mean() < 1.0


def test_the_masks_command_with_an_unreachable_bucket_exits_instead_of_spinning(tmp_path):
    # Today's failure mode was a process at 100% CPU forever: run it where a hang is a timeout.
    done = subprocess.run(
        [sys.executable, "-m", "dcgd", "masks", "--out", str(tmp_path / "m"), "--count", "2"]
        + ["--size", "32", "--bucket", "0.9-1.5"],
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "--bucket" in err and "0 <= LO < HI <= 1" in err


def test_a_try_that_draws_too_many_shapes_is_given_up():
    # 99-100% coverage out of 20 boxes of at most 1% each cannot happen: every try hits the
    # shape cap, and after max_tries the error names what to change.
    with pytest.raises(ConfigError, match="20 shapes over") as err:
        generate_mask(
            seeded_rng(0),
            (64, 64),
            Bucket("0.99", "1.0"),
            MaskSettings(kind="boxes"),
            max_tries=3,
            max_shapes=20,
        )
    message = str(err.value)
    assert "\n" not in message and "--bucket" in message and "buckets" in message


def test_mask_search_settings_are_checked():
    with pytest.raises(ValueError, match="max_tries"):
        generate_mask(seeded_rng(0), (32, 32), Bucket("0.1", "0.2"), max_tries=0)
    with pytest.raises(ValueError, match="max_shapes"):
        generate_mask(seeded_rng(0), (32, 32), Bucket("0.1", "0.2"), max_shapes=0)


def test_object_placement_is_bounded_on_a_crowded_canvas():
    from dcgd.data.procedural import PLACEMENT_TRIES, _place

    # Every spot is taken: placement gives up after its tries and overlaps, it does not wait
    # for a free spot that does not exist.
    taken = [(x, y, 8) for x in range(0, 16, 2) for y in range(0, 16, 2)]
    rng = np.random.default_rng(0)
    x, y = _place(rng, 16, 8, taken)
    assert 0 <= x <= 8 and 0 <= y <= 8
    assert PLACEMENT_TRIES >= 1


def test_scenes_render_at_the_smallest_size():
    from dcgd.data.procedural import render_scene

    for seed in range(20):
        scene = render_scene(np.random.default_rng(seed), 8)
        assert scene.image.shape == (8, 8, 3)
    with pytest.raises(ConfigError, match="size >= 8"):
        render_scene(np.random.default_rng(0), 4)  # 4 px objects would not fit


def test_a_paste_that_cannot_fit_its_bucket_gives_up():
    from dcgd.data.pairs import paste_pair
    from dcgd.data.procedural import render_object

    target = np.zeros((16, 16, 3), np.uint8)
    cutout = render_object("red circle", 32, np.random.default_rng(0))
    # A dilation of 12 grows any footprint past a quarter of 16x16: no try lands in 0.01-0.02.
    pair = paste_pair(
        target, cutout, np.random.default_rng(0), dilation=12, bucket=Bucket("0.01", "0.02")
    )
    assert pair is None
    with pytest.raises(ValueError, match="max_tries"):
        paste_pair(target, cutout, np.random.default_rng(0), max_tries=0)
