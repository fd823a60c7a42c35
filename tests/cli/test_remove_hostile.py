"""``python -m dcgd remove`` against hostile input and faults (issue 13).

Bad numbers are refused in one line; every image mode is kept or refused, and no pixel outside
the mask ever changes (compared at the file's own depth); inputs are never written over,
outputs only with --overwrite and never half-written, folder runs never write outside --out;
broken members of a folder are skipped and reported while the rest is done.
"""

from __future__ import annotations

import math
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from dcgd.cli import main
from dcgd.errors import ConfigError
from dcgd.sampling.pipeline import load_pipeline
from dcgd.sampling.remover import Remover
from tests.cli.helpers import error_line, help_text
from tests.training.tiny import fit_tiny_checkpoint

H, W = 24, 40  # tiny images: the tiny model runs at 32 px, a mirrored window covers them
SIXTEEN_BIT_COLOUR = ("RGB;16", "RGBA;16")  # PIL cannot hold these: OpenCV reads/writes them


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return fit_tiny_checkpoint(tmp_path_factory.mktemp("remove-hostile-ckpt"))


@pytest.fixture
def loads(monkeypatch) -> list:
    """The model loads of the test (the real loader runs): a refusal must leave it empty."""
    import dcgd.sampling.pipeline

    calls, real = [], dcgd.sampling.pipeline.load_pipeline

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(dcgd.sampling.pipeline, "load_pipeline", spy)
    return calls


def _remove(checkpoint, image, mask, out, *extra) -> int:
    return main(
        ["remove", "--checkpoint", str(checkpoint), "--image", str(image), "--mask", str(mask),
         "--out", str(out), "--steps=2", "--prompt-mode=none", *extra]
    )  # fmt: skip


def _hole() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[8:17, 14:27] = 255
    return mask


def _make(mode: str, seed: int = 0) -> np.ndarray | Image.Image:
    """Random pixels of ``mode``: an array for 16-bit colour, else a PIL image."""
    rng = np.random.default_rng(seed)
    if mode in SIXTEEN_BIT_COLOUR:  # not multiples of 257: a round trip through 8 bits shows
        return rng.integers(0, 65536, (H, W, len(mode) - 3), dtype=np.uint16)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (H, W), dtype=np.uint16))
    if mode == "1":
        return Image.fromarray(rng.random((H, W)) > 0.5)
    if mode == "P":
        image = Image.fromarray(rng.integers(0, 16, (H, W), dtype=np.uint8), "P")
        image.putpalette(rng.integers(0, 256, 48).tolist())
        return image
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    array = rng.integers(0, 256, (H, W, channels), dtype=np.uint8)
    if mode in ("RGBA", "LA"):
        array[:4, :, -1] = 0  # fully transparent rows, whose colour must survive too
        array[4:6, :, -1] = 128
    return Image.fromarray(array[..., 0] if channels == 1 else array)


def _save(path, image) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray) and image.dtype == np.uint16:
        assert cv2.imwrite(str(path), image)
    elif isinstance(image, np.ndarray):
        Image.fromarray(image).save(path)
    else:
        image.save(path)
    return path


def _png_gray_alpha_16() -> bytes:
    """A 16-bit gray + alpha PNG, written by hand: neither PIL nor OpenCV can write one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    pixels = np.random.default_rng(0).integers(0, 65536, (H, W, 2)).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter 0 on every row
    header = struct.pack(">IIBBBBB", W, H, 16, 4, 0, 0, 0)  # depth 16, colour type 4
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _read(path) -> tuple[str, np.ndarray]:
    """(mode, pixels at the file's own depth): PIL's mode, or "RGB;16" / "RGBA;16"."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is not None and data.dtype == np.uint16 and data.ndim == 3:
        return ("RGBA;16" if data.shape[2] == 4 else "RGB;16"), data
    image = Image.open(path)
    return image.mode, np.asarray(image)


# ---------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    "option, value, allowed",
    [
        ("--w", "nan", "a number from -100 to 100"),
        ("--w", "inf", "a number from -100 to 100"),
        ("--w", "-inf", "a number from -100 to 100"),
        ("--w", "1e6", "a number from -100 to 100"),
        ("--steps", "0", "a whole number from 1 to 1000"),
        ("--steps", "100000", "a whole number from 1 to 1000"),
        ("--steps", "2.5", "a whole number from 1 to 1000"),
        ("--seed", "-1", "a whole number from 0 to"),
        ("--seed", str(2**64), "a whole number from 0 to"),
        ("--dilate", "-1", "a whole number from 0 to 1000"),
        ("--dilate", "nan", "a whole number from 0 to 1000"),
        ("--context", "nan", "a number from 1 to 10"),
        ("--context", "inf", "a number from 1 to 10"),
        ("--context", "0.5", "a number from 1 to 10"),
        ("--resolution", "0", "a whole number from 8 to 4096"),
        ("--resolution", "1000000", "a whole number from 8 to 4096"),
    ],
)
def test_a_numeric_option_out_of_range_is_refused_in_one_line(
    checkpoint, tmp_path, capsys, loads, option, value, allowed
):
    image = _save(tmp_path / "a.png", _make("RGB"))
    mask = _save(tmp_path / "m.png", _hole())
    out = tmp_path / "out.png"
    assert _remove(checkpoint, image, mask, out, f"{option}={value}") == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {option} must be ")
    assert allowed in line and repr(value) in line
    assert not out.exists() and loads == []


def test_a_device_that_does_not_exist_is_refused_in_one_line(checkpoint, tmp_path, capsys):
    image = _save(tmp_path / "a.png", _make("RGB"))
    mask = _save(tmp_path / "m.png", _hole())
    assert _remove(checkpoint, image, mask, tmp_path / "o.png", "--device=banana") == 2
    assert error_line(capsys).startswith("error: --device 'banana' is not a torch device")


def test_the_remover_refuses_nan_and_steps_the_model_cannot_take(checkpoint):
    pipeline = load_pipeline(checkpoint)
    most = pipeline.train_schedule.config.num_train_timesteps
    for bad in (
        {"context": math.nan},
        {"context": math.inf},
        {"sampling": {"w": math.nan}},
        {"sampling": {"w": math.inf}},
        {"sampling": {"steps": 0}},
        {"sampling": {"steps": most + 1}},
        {"sampling": {"stpes": 2}},
    ):
        with pytest.raises(ConfigError):
            Remover(pipeline, **bad)
    Remover(pipeline, sampling={"steps": most, "w": -2.0, "seed": 7})  # the edges are fine


# ---------------------------------------------------------------------------- modes
MODES = ("RGB", "RGBA", "L", "LA", "1", "P", "I;16", "RGB;16", "RGBA;16")


@pytest.fixture(scope="module")
def mode_run(checkpoint, tmp_path_factory):
    """One folder run over an image of every kept mode; returns (exit code, folder)."""
    root = tmp_path_factory.mktemp("modes")
    for index, mode in enumerate(MODES):
        name = mode.replace(";", "_")
        _save(root / "images" / f"{name}.png", _make(mode, seed=index))
        _save(root / "masks" / f"{name}.png", _hole())
    return _remove(checkpoint, root / "images", root / "masks", root / "out"), root


@pytest.mark.parametrize("mode", MODES)
def test_a_mode_is_kept_and_no_pixel_outside_the_mask_changes(mode_run, mode):
    code, root = mode_run
    assert code == 0
    name = mode.replace(";", "_") + ".png"
    source_mode, source = _read(root / "images" / name)
    result_mode, result = _read(root / "out" / name)
    assert source_mode == mode  # the test image is what it claims to be
    assert result_mode == mode and result.dtype == source.dtype and result.shape == source.shape
    inside = _hole() > 0
    np.testing.assert_array_equal(result[~inside], source[~inside])  # exact, original depth
    if mode in ("RGBA", "LA", "RGBA;16"):  # alpha is passed through, under the mask too
        np.testing.assert_array_equal(result[..., -1], source[..., -1])
    changed = result != source if result.ndim == 2 else (result != source).any(-1)
    assert changed[inside].mean() > 0.2  # the model did fill the hole
    if source.dtype == np.uint16:  # filled at 8 bits, written at 16: v * 257
        colour = result[inside] if result.ndim == 2 else result[inside][:, :3]  # not alpha
        assert (colour % 257 == 0).all()


@pytest.mark.parametrize(
    "mode, suffix, why",
    [
        ("CMYK", ".jpg", "is CMYK"),
        ("PT", ".png", "palette image with a transparent colour"),
        ("I", ".tif", "has pixel mode I"),
        ("F", ".tif", "mode F"),  # already refused in one line before issue 13
        ("GIF", ".gif", "holds 2 frames"),
        ("LA;16", ".png", "is 16-bit gray with alpha"),  # PIL reads it as RGBA
    ],
)
def test_a_mode_that_cannot_be_kept_is_refused_in_one_line(
    checkpoint, tmp_path, capsys, loads, mode, suffix, why
):
    path = tmp_path / f"image{suffix}"
    rgb = _make("RGB")
    if mode == "PT":
        _make("P").save(path, transparency=0)
    elif mode == "GIF":
        rgb.save(path, save_all=True, append_images=[_make("RGB", seed=1)])
    elif mode == "LA;16":
        path.write_bytes(_png_gray_alpha_16())
    elif mode in ("I", "F"):
        rgb.convert("L").convert(mode).save(path)
    else:
        rgb.convert(mode).save(path)
    mask = _save(tmp_path / "m.png", _hole())
    out = tmp_path / "out.png"
    assert _remove(checkpoint, path, mask, out) == 2
    line = error_line(capsys)
    assert why in line and line.endswith(" first")  # says what to do
    assert not out.exists() and loads == []


@pytest.mark.parametrize(
    "mode, suffix", [("RGBA", ".jpg"), ("I;16", ".bmp"), ("L", ".webp"), ("RGB;16", ".jpg")]
)
def test_an_output_format_that_cannot_hold_the_mode_is_refused_before_the_model_runs(
    checkpoint, tmp_path, capsys, loads, mode, suffix
):
    image = _save(tmp_path / "in.png", _make(mode))
    mask = _save(tmp_path / "m.png", _hole())
    out = tmp_path / f"out{suffix}"
    assert _remove(checkpoint, image, mask, out) == 2
    line = error_line(capsys)
    assert f"cannot hold {image} ({mode})" in line and ".png or .tif" in line
    assert not out.exists() and loads == []


def test_webp_is_written_lossless(checkpoint, tmp_path):
    image = _save(tmp_path / "in.png", _make("RGBA"))
    mask = _save(tmp_path / "m.png", _hole())
    assert _remove(checkpoint, image, mask, tmp_path / "out.webp") == 0
    (source_mode, source), (result_mode, result) = _read(image), _read(tmp_path / "out.webp")
    assert result_mode == source_mode == "RGBA"
    outside = _hole() == 0
    np.testing.assert_array_equal(result[outside], source[outside])
    np.testing.assert_array_equal(result[..., 3], source[..., 3])


# ---------------------------------------------------------------------------- files
@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("alias", ["image", "mask", "image's folder", "dotdot", "symlink"])
def test_an_input_is_never_written_over(checkpoint, tmp_path, capsys, loads, alias, overwrite):
    folder = tmp_path / "in"
    image = _save(folder / "photo.png", _make("RGB"))
    mask = _save(folder / "photo_mask.png", _hole())
    (tmp_path / "elsewhere").mkdir()
    out = {
        "image": image,
        "mask": mask,
        "image's folder": folder,  # -> in/photo.png, the image
        "dotdot": tmp_path / "elsewhere" / ".." / "in" / "photo.png",
        "symlink": tmp_path / "link.png",
    }[alias]
    if alias == "symlink":
        out.symlink_to(image)
    before = image.read_bytes(), mask.read_bytes()
    extra = ["--overwrite"] if overwrite else []
    code = _remove(checkpoint, image, mask, out, *extra)
    assert (image.read_bytes(), mask.read_bytes()) == before
    assert code == 2
    line = error_line(capsys)
    assert "never writes over its inputs (not even with --overwrite)" in line
    assert loads == []


def test_an_existing_output_is_replaced_only_with_overwrite(checkpoint, tmp_path, capsys, loads):
    image = _save(tmp_path / "in.png", _make("RGB"))
    mask = _save(tmp_path / "m.png", _hole())
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    code = _remove(checkpoint, image, mask, out)
    assert out.read_bytes() == b"precious"
    assert code == 2 and loads == []
    assert "already exists; pass --overwrite" in error_line(capsys)
    assert _remove(checkpoint, image, mask, out, "--overwrite") == 0
    assert _read(out)[1].shape == (H, W, 3)


@pytest.mark.parametrize("existing", [False, True])
def test_a_run_killed_while_writing_leaves_no_partial_file(
    checkpoint, tmp_path, monkeypatch, existing
):
    image = _save(tmp_path / "in.png", _make("RGB"))
    mask = _save(tmp_path / "m.png", _hole())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "result.png"
    if existing:  # replaced with --overwrite: the old one must survive the kill
        _save(out, _make("RGB", seed=5))
    before = out.read_bytes() if existing else None

    def killed_half_way(self, fp, *args, **kwargs):
        data = b"\x89PNG\r\n\x1a\n half an image"
        if hasattr(fp, "write"):
            fp.write(data)
        else:
            with open(fp, "wb") as file:
                file.write(data)
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", killed_half_way)
    extra = ["--overwrite"] if existing else []
    code = _remove(checkpoint, image, mask, out, *extra)
    assert (out.read_bytes() if out.exists() else None) == before  # old file, or none
    assert sorted(os.listdir(out_dir)) == (["result.png"] if existing else [])  # no temp file
    assert code == 130


def test_a_result_is_written_with_the_usual_permissions(checkpoint, tmp_path):
    image = _save(tmp_path / "in.png", _make("RGB"))
    mask = _save(tmp_path / "m.png", _hole())
    assert _remove(checkpoint, image, mask, tmp_path / "out.png") == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~umask


def _folders(root, names=("a", "b")):
    for name in names:
        _save(root / "images" / f"{name}.png", _make("RGB"))
        _save(root / "masks" / f"{name}.png", _hole())
    return root / "images", root / "masks"


@pytest.mark.parametrize(
    "where, what", [("images", "--image"), ("masks", "--mask"), ("images/sub", "--image")]
)
def test_a_folder_run_refuses_an_out_inside_its_inputs(
    checkpoint, tmp_path, capsys, loads, where, what
):
    images, masks = _folders(tmp_path)
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*.png"))}
    out = tmp_path / where
    code = _remove(checkpoint, images, masks, out, "--overwrite")
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*.png"))} == before
    assert code == 2 and loads == []
    assert f"is inside the {what} folder" in error_line(capsys)


def test_a_folder_run_refuses_existing_results_without_overwrite(
    checkpoint, tmp_path, capsys, loads
):
    images, masks = _folders(tmp_path)
    out = tmp_path / "out"
    _save(out / "b.png", np.zeros((2, 2), np.uint8))
    code = _remove(checkpoint, images, masks, out)
    assert not (out / "a.png").exists() and _read(out / "b.png")[1].shape == (2, 2)
    assert code == 2 and loads == []
    assert "1 result(s) already exist" in error_line(capsys)
    assert _remove(checkpoint, images, masks, out, "--overwrite") == 0
    assert _read(out / "b.png")[1].shape == (H, W, 3)


def test_a_folder_run_never_writes_outside_out_nor_through_a_link(checkpoint, tmp_path, capsys):
    images, masks = _folders(tmp_path, names=("a", "sub/b", "c"))
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)  # out/sub/b.png -> outside
    (out / "c.png").symlink_to(images / "c.png")  # replacing c.png would write on the input
    before = (images / "c.png").read_bytes()
    assert _remove(checkpoint, images, masks, out, "--overwrite") == 1
    assert os.listdir(outside) == []
    assert (images / "c.png").read_bytes() == before
    assert _read(out / "a.png")[1].shape == (H, W, 3)  # the rest is done
    err = capsys.readouterr().err
    assert "skipped sub/b: " in err and "would be written outside --out" in err
    assert "skipped c: " in err and "is an input image or mask" in err


# ---------------------------------------------------------------------------- folders
def test_a_folder_skips_each_unusable_file_in_one_line_and_does_the_rest(
    checkpoint, tmp_path, capsys
):
    images, masks = tmp_path / "images", tmp_path / "masks"
    good = _save(images / "good.png", _make("RGB"))
    _save(masks / "good.png", _hole())
    corrupt = images / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:200])  # a truncated PNG
    (images / "notes.png").write_text("not an image at all\n")
    _save(images / "odd\nname.png", _make("RGB"))
    _save(images / "lonely.png", _make("RGB"))  # no mask
    _save(images / "small.png", _make("RGB"))
    _save(masks / "small.png", np.full((10, 10), 255, np.uint8))  # a mask of another size
    _save(images / "twice.png", _make("RGB"))
    _save(images / "twice.jpg", _make("RGB"))  # two images of one name
    for name in ("corrupt", "notes", "odd\nname", "twice"):
        _save(masks / f"{name}.png", _hole())

    assert _remove(checkpoint, images, masks, tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert "dcgd remove: 1 done, 6 skipped" in captured.out
    lines = [line for line in captured.err.splitlines() if line.startswith("  skipped ")]
    reasons = {
        "corrupt": "cannot decode image",
        "notes": "cannot decode image",
        "'odd\\nname'": "control or invisible characters",
        "lonely": "no mask of the same name",
        "small": "is 10x10 but its image",
        "twice": "two images of this name",
    }
    assert len(lines) == len(reasons), lines
    for key, reason in reasons.items():
        (line,) = [line for line in lines if line.startswith(f"  skipped {key}: ")]
        assert reason in line, line
    assert sorted(os.listdir(tmp_path / "out")) == ["good.png"]
    source, result = _read(good)[1], _read(tmp_path / "out" / "good.png")[1]
    outside = _hole() == 0
    np.testing.assert_array_equal(result[outside], source[outside])


def test_help_explains_overwrite_the_rules_and_the_exit_status(capsys):
    text = help_text(capsys, "remove")
    assert "--overwrite replace outputs that already exist" in text
    assert "never written over (not even with --overwrite)" in text
    assert "16-bit gray and 16-bit RGB/RGBA" in text and "CMYK" in text
    assert "exit status: 0 every image done; 1 some image(s) skipped; 2 an error" in text
    assert "--w W guidance weight of eq. 6, -100 to 100" in text
