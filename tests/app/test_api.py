"""``POST /api/remove`` and friends against a real uvicorn server on loopback (tiny model)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import numpy as np
import pytest
import requests

from dcgd.app.server import create_app
from dcgd.cli import main
from dcgd.describe.base import Description
from tests.app.conftest import LIMITS, CountingDescriber, box_mask, photo, png, read_png, serve

STEPS = {"steps": "2"}


def _remove(server, image: bytes, mask: bytes, name: str = "photo.png", **fields):
    files = {"image": (name, image, "image/png"), "mask": ("mask.png", mask, "image/png")}
    return requests.post(f"{server}/api/remove", files=files, data={**STEPS, **fields}, timeout=120)


def test_removal_changes_the_hole_and_nothing_else(server):
    image, mask = photo(), box_mask()
    answer = _remove(server, png(image), png(mask))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["x-dcgd-key"] == "photo"
    result = read_png(answer.content)
    assert result.shape == image.shape  # the upload's size, RGB
    hole = mask > 0
    assert np.array_equal(result[~hole], image[~hole])  # exactly, not approximately
    changed = np.any(result[hole] != image[hole], axis=-1)
    assert changed.mean() > 0.9  # the model filled the hole: not the ramp that was there


def test_same_result_as_the_remove_command(server, app_checkpoint, tmp_path):
    image, mask = photo(), box_mask()
    (tmp_path / "photo.png").write_bytes(png(image))
    (tmp_path / "mask.png").write_bytes(png(mask))
    out = tmp_path / "out.png"
    options = ["--steps", "2", "--seed", "7", "--w", "2.5", "--dilate", "2"]
    argv = ["remove", "--checkpoint", str(app_checkpoint), "--image", str(tmp_path / "photo.png")]
    assert main([*argv, "--mask", str(tmp_path / "mask.png"), "--out", str(out), *options]) == 0
    answer = _remove(server, png(image), png(mask), seed="7", w="2.5", dilate="2")
    assert answer.status_code == 200, answer.text
    assert np.array_equal(read_png(answer.content), read_png(out.read_bytes()))
    # The seed matters, so the equality above is not a model that ignores it.
    other = _remove(server, png(image), png(mask), seed="8", w="2.5", dilate="2")
    assert not np.array_equal(read_png(other.content), read_png(out.read_bytes()))


def test_a_transparent_upload_keeps_its_alpha(server):
    rgba = np.dstack([photo(), np.tile(np.arange(80, dtype=np.uint8) * 3, (60, 1))])
    answer = _remove(server, png(rgba), png(box_mask()))
    assert answer.status_code == 200, answer.text
    result = read_png(answer.content)
    hole = box_mask() > 0
    assert result.shape == (60, 80, 4)
    assert np.array_equal(result[..., 3], rgba[..., 3])  # alpha untouched, under the mask too
    assert np.array_equal(result[~hole], rgba[~hole])  # colour kept even where alpha is 0
    assert np.any(result[hole][:, :3] != rgba[hole][:, :3])


def test_eight_concurrent_requests_each_get_their_own_answer(server):
    def ask(i: int) -> np.ndarray:
        mask = box_mask(top=5 + 4 * i, left=5 + 6 * i)  # a different image and hole each
        answer = _remove(server, png(photo(shift=10 * i)), png(mask), name=f"p{i}.png", seed=i)
        assert answer.status_code == 200, answer.text
        return read_png(answer.content)

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8)))
    alone = [ask(i) for i in range(8)]  # one at a time: the answers each request must get
    for i in range(8):
        assert np.array_equal(together[i], alone[i]), f"request {i} got another answer"
        hole = box_mask(top=5 + 4 * i, left=5 + 6 * i) > 0
        assert np.array_equal(together[i][~hole], photo(shift=10 * i)[~hole])
    health = requests.get(f"{server}/api/health", timeout=10).json()
    assert health == {"status": "ok", "running": False, "waiting": 0}


IMAGE, MASK = png(photo()), png(box_mask())
FULL = png(np.full((60, 80), 255, np.uint8))
BAD = [
    ("not an image", {"image": b"hello, not a picture"}, {}, 400, "is not a PNG, JPEG"),
    ("empty file", {"image": b""}, {}, 400, "the image file is empty"),
    ("mask of another size", {"mask": png(box_mask(30, 40, 5, 5))}, {}, 400, "the mask is 40x30"),
    ("empty mask", {"mask": png(np.zeros((60, 80), np.uint8))}, {}, 400, "the mask is empty"),
    ("whole-image mask", {"mask": FULL}, {}, 400, "the mask covers the whole image"),
    ("w nan", {}, {"w": "nan"}, 400, "w must be a number from -100 to 100; got 'nan'"),
    ("w inf", {}, {"w": "inf"}, 400, "w must be a number"),
    ("w text", {}, {"w": "strong"}, 400, "w must be a number"),
    ("steps 0", {}, {"steps": "0"}, 400, "steps must be a whole number from 1 to 1000"),
    ("steps 2.5", {}, {"steps": "2.5"}, 400, "steps must be a whole number"),
    ("seed -1", {}, {"seed": "-1"}, 400, "seed must be a whole number from 0"),
    ("dilate -3", {}, {"dilate": "-3"}, 400, "dilate must be a whole number from 0 to 1000"),
    ("prompt mode", {}, {"prompt_mode": "both"}, 400, "prompt_mode must be one of none"),
    ("sampler", {}, {"sampler": "plms"}, 400, "sampler must be one of ddim"),
    ("job id", {}, {"job": "a/b"}, 400, "job must be 1 to 64 letters"),
    ("mask missing", {"mask": None}, {}, 422, "send the mask as the multipart file field"),
    ("image as text", {"image": None}, {"image": "photo.png"}, 422, "send the image as a file"),
    ("too many bytes", {"image": b"x" * (3 * 2**20)}, {}, 413, "at most 2.0 MB per request"),
    (
        "too many pixels",
        {"image": png(np.zeros((1000, 1200, 3), np.uint8)), "mask": png(box_mask(1000, 1200))},
        {},
        413,
        "the image has 1.2 megapixels; this server takes at most 1.0",
    ),
]


@pytest.mark.parametrize(
    ("files", "fields", "status", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_a_bad_upload_gets_a_4xx_and_one_clear_sentence(server, files, fields, status, says):
    uploads = {"image": IMAGE, "mask": MASK, **files}
    parts = {k: (f"{k}.png", v, "image/png") for k, v in uploads.items() if v is not None}
    answer = requests.post(
        f"{server}/api/remove", files=parts, data={**STEPS, **fields}, timeout=120
    )
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and says in detail
    assert "\n" not in detail and "Traceback" not in detail and "/tmp" not in detail
    assert requests.get(f"{server}/api/health", timeout=10).json()["status"] == "ok"


def test_a_post_from_another_site_is_refused(server):
    files = {"image": ("p.png", IMAGE), "mask": ("m.png", MASK)}
    answer = requests.post(
        f"{server}/api/remove", files=files, headers={"Origin": "https://evil.example"}, timeout=30
    )
    assert answer.status_code == 403
    assert "requests from pages of other sites" in answer.json()["detail"]


def test_model_health_progress_and_the_offline_docs_and_page(server, pipeline):
    model = requests.get(f"{server}/api/model", timeout=10).json()
    settings = pipeline.settings
    assert model["defaults"]["steps"] == settings.steps and model["defaults"]["w"] == settings.w
    assert model["defaults"]["prompt_mode"] == settings.prompt_mode
    assert model["settings"]["resolution"] == settings.resolution
    assert "dpmsolver++" in model["choices"]["sampler"] and model["describer"] is None
    assert requests.get(f"{server}/api/health", timeout=10).json()["status"] == "ok"
    assert requests.get(f"{server}/api/progress/xyz", timeout=10).json() == {"state": "unknown"}
    schema = requests.get(f"{server}/openapi.json", timeout=10).json()
    assert {"/api/remove", "/api/model", "/api/health"} <= set(schema["paths"])
    docs = requests.get(f"{server}/docs", timeout=10)
    assert docs.status_code == 200
    for name in ("/api/remove", "t_info", "t_mask", "dilate", "413"):
        assert name in docs.text
    assert "<td><code>image</code></td><td>file</td>" in docs.text  # required, a file
    page = requests.get(server, timeout=10)
    for text in (docs.text, page.text):  # nothing is loaded from elsewhere: works offline
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
        assert "<script src" not in text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<canvas" in page.text


class _Fixed(CountingDescriber):
    """Describes every window the same way, and counts how often it was asked."""

    def describe_window(self, source, mask) -> Description:
        return Description(t_info="a sunny beach", t_mask="a red ball")


def test_empty_descriptions_come_from_the_describer_and_typed_ones_win(pipeline):
    describer = _Fixed()
    url, running, thread = serve(create_app(pipeline, describer=describer, limits=LIMITS))
    try:
        assert requests.get(f"{url}/api/model", timeout=10).json()["describer"] == "_Fixed"
        answer = _remove(url, IMAGE, MASK)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-dcgd-t-info"] == "a sunny beach"
        assert answer.headers["x-dcgd-t-mask"] == "a red ball"
        typed = _remove(url, IMAGE, MASK, t_info="a café terrace, 20°C", t_mask="")
        assert unquote(typed.headers["x-dcgd-t-info"]) == "a café terrace, 20°C"  # UTF-8 kept
        assert typed.headers["x-dcgd-t-mask"] == "a red ball"  # left empty: described
        assert describer.calls == 2
    finally:
        running.should_exit = True
        thread.join(timeout=10)
