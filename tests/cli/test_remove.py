"""``python -m dcgd remove`` on real photographs of odd sizes, folders, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dcgd.cli import main
from dcgd.data.masks import postprocess
from dcgd.data.photos import load_photo
from dcgd.sampling.pipeline import load_pipeline
from dcgd.sampling.remover import Remover
from tests.cli.helpers import error_line
from tests.compiling import compile_on_eager_backend
from tests.training.tiny import fit_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return fit_tiny_checkpoint(tmp_path_factory.mktemp("remove-ckpt"))


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _read(path):
    return np.asarray(Image.open(path))


def _blob(shape, center, radii):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inside = ((yy - center[0]) / radii[0]) ** 2 + ((xx - center[1]) / radii[1]) ** 2 <= 1
    return (inside * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def coffee(tmp_path_factory):
    """skimage's coffee photograph: 600 x 400, a cup on a saucer; mask over the spoon."""
    folder = tmp_path_factory.mktemp("coffee")
    photo = load_photo("coffee")
    assert photo.shape == (400, 600, 3)
    image = _save(folder / "coffee.png", photo)
    mask = _save(folder / "coffee_mask.png", _blob(photo.shape[:2], (200, 370), (110, 35)))
    return image, mask


def _remove(checkpoint, image, mask, out, *extra):
    return main(
        ["remove", "--checkpoint", str(checkpoint), "--image", str(image), "--mask", str(mask),
         "--out", str(out), "--steps", "2", "--prompt-mode", "none", *extra]
    )  # fmt: skip


@pytest.mark.parametrize("dilate", [0, 9])
def test_odd_sized_photo_keeps_its_size_and_every_pixel_outside_the_mask(
    checkpoint, coffee, tmp_path, dilate
):
    image, mask = coffee
    out = tmp_path / "result.png"
    assert _remove(checkpoint, image, mask, out, "--dilate", str(dilate)) == 0
    source, result = _read(image), _read(out)
    assert result.shape == source.shape == (400, 600, 3)
    filled = postprocess((_read(mask) > 127).astype(np.uint8), dilation=dilate).astype(bool)
    np.testing.assert_array_equal(result[~filled], source[~filled])
    changed = (result != source).any(-1)
    assert changed[filled].mean() > 0.5  # the model did fill the (dilated) hole
    assert _remove(checkpoint, image, mask, tmp_path / "again.png", "--dilate", str(dilate)) == 0
    np.testing.assert_array_equal(_read(tmp_path / "again.png"), result)  # same seed, same image


def test_compile_runs_the_model_through_the_compiler_and_fills_the_same(
    checkpoint, coffee, tmp_path, monkeypatch
):
    image, mask = coffee
    calls = compile_on_eager_backend(monkeypatch)
    assert _remove(checkpoint, image, mask, tmp_path / "plain.png", "--prompt-mode", "dual") == 0
    assert calls == []
    compiled = tmp_path / "compiled.png"
    assert _remove(checkpoint, image, mask, compiled, "--prompt-mode", "dual", "--compile") == 0
    assert [backend for _, backend in calls] == ["inductor"]
    difference = np.abs(_read(compiled).astype(int) - _read(tmp_path / "plain.png").astype(int))
    assert difference.max() <= 1  # 8-bit pixels: at most one level of rounding


def test_a_mask_taller_than_the_window_fits_by_mirroring(checkpoint, tmp_path):
    photo = load_photo("chelsea")  # 451 x 300
    image = _save(tmp_path / "chelsea.jpg", photo)
    mask_array = np.zeros(photo.shape[:2], np.uint8)
    mask_array[5:295, 200:240] = 255  # box side 290: window 580, wider than the image is tall
    mask = _save(tmp_path / "chelsea.png", mask_array)
    assert _remove(checkpoint, image, mask, tmp_path / "out") == 0
    source, result = _read(image), _read(tmp_path / "out" / "chelsea.png")
    outside = mask_array == 0
    np.testing.assert_array_equal(result[outside], source[outside])


def test_a_folder_is_matched_by_name_and_equals_single_runs(checkpoint, coffee, tmp_path):
    image, mask = coffee
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "coffee.png", _read(image))
    _save(masks / "coffee.png", _read(mask))
    photo = load_photo("astronaut")[100:301, 50:383]  # 333 x 201
    _save(images / "sub" / "astronaut.png", photo)
    _save(masks / "sub" / "astronaut.bmp", _blob(photo.shape[:2], (90, 160), (30, 50)))
    assert _remove(checkpoint, images, masks, tmp_path / "out") == 0
    assert _remove(checkpoint, image, mask, tmp_path / "single") == 0
    np.testing.assert_array_equal(
        _read(tmp_path / "out" / "coffee.png"), _read(tmp_path / "single" / "coffee.png")
    )
    assert _read(tmp_path / "out" / "sub" / "astronaut.png").shape == photo.shape


def test_bad_input_exits_non_zero_with_one_clear_line(checkpoint, coffee, tmp_path, capsys):
    image, mask = coffee
    out = tmp_path / "out.png"
    small = _save(tmp_path / "small.png", np.full((100, 100), 255, np.uint8))
    assert _remove(checkpoint, image, small, out) == 2
    assert "is 100x100 but its image" in error_line(capsys)

    empty = _save(tmp_path / "empty.png", np.zeros((400, 600), np.uint8))
    assert _remove(checkpoint, image, empty, out) == 2
    assert "is empty" in error_line(capsys)

    broken = tmp_path / "broken.png"
    broken.write_bytes(_read(image).tobytes()[:1000])
    assert _remove(checkpoint, broken, mask, out) == 2
    assert "cannot decode image" in error_line(capsys)

    assert _remove(tmp_path / "nowhere.ckpt", image, mask, out) == 2
    line = error_line(capsys)
    assert "nowhere.ckpt does not exist" in line
    assert not out.exists()


def test_in_a_folder_a_bad_pair_is_skipped_and_reported(checkpoint, coffee, tmp_path, capsys):
    image, mask = coffee
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "good.png", _read(image))
    _save(masks / "good.png", _read(mask))
    _save(images / "bad.png", _read(image))
    _save(masks / "bad.png", np.zeros((400, 600), np.uint8))
    assert _remove(checkpoint, images, masks, tmp_path / "out") == 1
    assert (tmp_path / "out" / "good.png").is_file() and not (tmp_path / "out" / "bad.png").exists()
    assert "skipped bad:" in capsys.readouterr().err

    (masks / "bad.png").unlink()  # an image without a mask is skipped too, the rest done
    assert _remove(checkpoint, images, masks, tmp_path / "out2") == 1
    assert (tmp_path / "out2" / "good.png").is_file()
    assert not (tmp_path / "out2" / "bad.png").exists()
    assert "skipped bad: no mask of the same name" in capsys.readouterr().err

    (masks / "good.png").unlink()  # no image has a mask: the folders do not pair at all
    assert _remove(checkpoint, images, masks, tmp_path / "out3") == 2
    assert "has a mask of the same name" in error_line(capsys)


def test_missing_descriptions_are_warned_about(checkpoint, coffee, tmp_path, capsys):
    image, mask = coffee
    argv = ["--prompt-mode", "negative"]
    assert _remove(checkpoint, image, mask, tmp_path / "a.png", *argv) == 0
    assert "uses t_mask but none was given" in capsys.readouterr().err
    assert _remove(checkpoint, image, mask, tmp_path / "b.png", *argv, "--t-mask", "a spoon") == 0
    assert "warning" not in capsys.readouterr().err
    assert not np.array_equal(_read(tmp_path / "a.png"), _read(tmp_path / "b.png"))


def test_the_clip_describer_writes_the_prompts(checkpoint, coffee, tmp_path):
    import open_clip

    from dcgd.cli.remove import build_describer
    from dcgd.describe.clip_describer import ClipRegionDescriber
    from dcgd.describe.clip_model import save_clip, tiny_clip_config

    config = tiny_clip_config()
    clip_dir = save_clip(open_clip.CLIP(**config), config, tmp_path / "clip")
    (tmp_path / "objects.txt").write_text("spoon\ncup\nsaucer\n")
    (tmp_path / "scenes.txt").write_text("kitchen\ncafe\n")
    describer = ClipRegionDescriber(
        clip_model=str(clip_dir),
        object_vocabulary=str(tmp_path / "objects.txt"),
        scene_vocabulary=str(tmp_path / "scenes.txt"),
    )
    image, mask = coffee
    remover = Remover(load_pipeline(checkpoint), describer=describer, sampling={"steps": 2})
    assert remover.missing_descriptions() == []
    photo, hole = _read(image), (_read(mask) > 127).astype(np.uint8)
    result = remover(photo, hole, key="coffee")
    assert result.t_mask in {"spoon", "cup", "saucer"}
    assert result.t_info.split(" with ")[0] in {"kitchen", "cafe"}
    fixed = Remover(
        remover.pipeline, t_info=result.t_info, t_mask=result.t_mask, sampling={"steps": 2}
    )
    np.testing.assert_array_equal(fixed(photo, hole, key="coffee").image, result.image)
    # The command builds the same describer from --describer.
    args = type("Args", (), {"describer": str(clip_dir), "describer_pretrained": None})
    built = build_describer(args)
    assert isinstance(built, ClipRegionDescriber) and built.clip_source["model"] == str(clip_dir)
