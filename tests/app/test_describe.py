"""``Remover.describe`` and ``POST /api/describe``: the descriptions a removal would read,
asked before running it (so the page can show them, editable)."""

from __future__ import annotations

from urllib.parse import unquote

import numpy as np
import pytest
import requests

from dcgd.app.server import create_app
from dcgd.describe.base import Description
from dcgd.sampling.remover import Remover
from tests.app.conftest import LIMITS, CountingDescriber, box_mask, photo, png, serve


class _Measuring(CountingDescriber):
    """Describes a window by what is in it (its mean colour and the masked pixels), so two
    descriptions agree only if they were made of the same window at the same size."""

    def describe_window(self, source, mask) -> Description:
        return Description(
            t_info=f"mean {float(source.mean()):.6f} of {tuple(source.shape)}",
            t_mask=f"{int(mask.sum())} masked pixels",
        )


def test_describe_gives_what_the_removal_reads(pipeline):
    image, mask = photo(), box_mask() // 255
    remover = Remover(pipeline, dilate=3, describer=_Measuring(), sampling={"steps": 2})
    described = remover.describe(image, mask, key="photo")
    removal = remover(image, mask, key="photo")
    assert described == (removal.t_info, removal.t_mask)
    assert described[0].startswith("mean ") and described[1] != "0 masked pixels"
    # Another window (no dilation) is described otherwise: the equality above is not luck.
    assert Remover(pipeline, describer=_Measuring()).describe(image, mask)[1] != described[1]
    # Given descriptions win; a prompt mode that reads none asks the describer nothing.
    given = Remover(pipeline, dilate=3, t_info="a beach", describer=_Measuring())
    assert given.describe(image, mask, key="photo") == ("a beach", described[1])
    silent = _Measuring()
    none = Remover(pipeline, dilate=3, describer=silent, sampling={"prompt_mode": "none"})
    assert none.describe(image, mask) == ("", "") and silent.calls == 0
    # No describer: nothing to say.
    assert Remover(pipeline).describe(image, mask) == ("", "")


@pytest.fixture(scope="module")
def described_server(pipeline):
    describer = _Measuring()
    url, running, thread = serve(create_app(pipeline, describer=describer, limits=LIMITS))
    yield url, describer
    running.should_exit = True
    thread.join(timeout=10)


def _post(url: str, route: str, image: bytes, mask: bytes, **fields) -> requests.Response:
    files = {"image": ("photo.png", image, "image/png"), "mask": ("mask.png", mask, "image/png")}
    return requests.post(f"{url}/api/{route}", files=files, data=fields, timeout=120)


def test_api_describe_says_what_the_next_removal_uses(described_server):
    url, describer = described_server
    image, mask = png(photo()), png(box_mask())
    said = _post(url, "describe", image, mask, dilate="2")
    assert said.status_code == 200, said.text
    body = said.json()
    assert body["describer"] == "_Measuring" and body["t_info"].startswith("mean ")
    removed = _post(url, "remove", image, mask, dilate="2", steps="2")
    assert removed.status_code == 200, removed.text
    used = (unquote(removed.headers["x-dcgd-t-info"]), unquote(removed.headers["x-dcgd-t-mask"]))
    assert (body["t_info"], body["t_mask"]) == used
    # The options reach the describer: another dilation, another window; a prompt mode that
    # reads no description asks it nothing.
    assert _post(url, "describe", image, mask).json()["t_mask"] != body["t_mask"]
    calls = describer.calls
    none = _post(url, "describe", image, mask, prompt_mode="none").json()
    assert (none["t_info"], none["t_mask"], describer.calls) == ("", "", calls)
    assert requests.get(f"{url}/api/health", timeout=10).json() == {
        "status": "ok",
        "running": False,
        "waiting": 0,
    }


BAD = [
    ("not an image", {"image": b"hello"}, {}, 400, "the image is not a PNG, JPEG"),
    ("mask of another size", {"mask": png(box_mask(30, 40, 5, 5))}, {}, 400, "the mask is 40x30"),
    ("empty mask", {"mask": png(np.zeros((60, 80), np.uint8))}, {}, 400, "the mask is empty"),
    ("prompt mode", {}, {"prompt_mode": "both"}, 400, "prompt_mode must be one of none"),
    ("dilate", {}, {"dilate": "-1"}, 400, "dilate must be a whole number from 0"),
    ("mask missing", {"mask": None}, {}, 422, "send the mask as the multipart file field"),
]


@pytest.mark.parametrize("with_describer", [True, False], ids=["describer", "no-describer"])
@pytest.mark.parametrize(
    ("files", "fields", "status", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_a_bad_describe_upload_gets_a_4xx_and_one_sentence(
    described_server, server, with_describer, files, fields, status, says
):
    url = described_server[0] if with_describer else server
    uploads = {"image": png(photo()), "mask": png(box_mask()), **files}
    parts = {k: (f"{k}.png", v, "image/png") for k, v in uploads.items() if v is not None}
    answer = requests.post(f"{url}/api/describe", files=parts, data=fields, timeout=120)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and says in detail and "\n" not in detail


def test_without_a_describer_describe_is_empty_and_says_so(server):
    answer = _post(server, "describe", png(photo()), png(box_mask()))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"t_info": "", "t_mask": "", "describer": None}
    assert requests.get(f"{server}/api/model", timeout=10).json()["describer"] is None
    assert "/api/describe" in requests.get(f"{server}/openapi.json", timeout=10).json()["paths"]
