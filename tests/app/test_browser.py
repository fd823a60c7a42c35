"""The page in a real headless Chromium (Debian's chromium + chromium-driver, via selenium):
open an image, paint a stroke, run, and check what came back, pixel by pixel."""

from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import photo, png

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
WIDTH, HEIGHT = 240, 160


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,900")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


# How many pixels of the mask canvas are painted.
PAINTED = """const c = document.getElementById('paint');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n;"""


def _fetched(element: str, attribute: str) -> str:
    """JavaScript for the Blob behind an element's URL (an <img> src, a link's href)."""
    return f"fetch(document.getElementById('{element}').{attribute}).then((r) => r.blob())"


def _blob(driver, expression: str) -> np.ndarray:
    """A Blob the page holds (``expression``: a Blob or a promise of one), as an RGB array."""
    script = """const done = arguments[arguments.length - 1];
        Promise.resolve(EXPRESSION).then((blob) => {
          const reader = new FileReader();
          reader.onload = () => done(reader.result.split(",")[1]);
          reader.readAsDataURL(blob);
        }).catch((err) => done(`failed: ${err}`));"""
    data = driver.execute_async_script(script.replace("EXPRESSION", expression))
    assert not data.startswith("failed"), data
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.asarray(image.convert("RGB")).copy()


def test_paint_a_stroke_run_and_get_the_hole_filled_and_the_rest_kept(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = photo(WIDTH, HEIGHT)
    path = tmp_path / "ramp.png"
    path.write_bytes(png(image))
    driver, wait = browser, WebDriverWait(browser, 60)
    driver.get(server)
    wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") != "")
    assert driver.find_element(By.ID, "prompt_mode").get_attribute("value") == "dual"

    driver.find_element(By.ID, "open-image").send_keys(str(path))
    canvas = driver.find_element(By.ID, "paint")
    wait.until(lambda d: canvas.get_attribute("width") == str(WIDTH))
    assert driver.find_element(By.ID, "run").is_enabled()

    # A horizontal stroke through the middle of the image, 20 screen pixels wide.
    driver.execute_script(
        "const b = document.getElementById('brush'); b.value = 20;"
        "b.dispatchEvent(new Event('input'));"
    )
    shown = canvas.size["width"]
    (
        ActionChains(driver)
        .move_to_element_with_offset(canvas, -shown // 4, 0)  # offsets from the centre
        .click_and_hold()
        .move_by_offset(shown // 4, 0)
        .move_by_offset(shown // 4, 0)
        .release()
        .perform()
    )
    # The server has no describer: Describe stays disabled with a stroke painted, and the
    # page says the fields are sent as typed (empty).
    assert not driver.find_element(By.ID, "describe").is_enabled()
    assert "no describer configured" in driver.find_element(By.ID, "describer-hint").text
    driver.find_element(By.ID, "run").click()
    wait.until(lambda d: d.execute_script("return window.dcgdLast !== null"))
    wait.until(
        lambda d: d.find_element(By.ID, "result").get_attribute("naturalWidth") == str(WIDTH)
    )
    assert driver.find_element(By.ID, "status").text.startswith("done in")
    assert driver.find_element(By.ID, "error").text == ""

    mask = _blob(driver, "window.dcgdLast.mask")[..., 0] > 127
    result = _blob(driver, "window.dcgdLast.result")
    # The mask the page sent is the stroke: the middle row, from 1/4 to 3/4 of the width.
    rows, cols = np.nonzero(mask)
    scale = WIDTH / shown
    assert abs(rows.mean() - HEIGHT / 2) < 2 and abs(cols.mean() - WIDTH / 2) < 4
    assert abs((cols.max() - cols.min()) - (WIDTH / 2 + 20 * scale)) < 6
    assert abs((rows.max() - rows.min()) - 20 * scale) < 4
    # The result: changed under the stroke, every other pixel exactly as opened.
    assert result.shape == image.shape
    assert np.array_equal(result[~mask], image[~mask])
    assert np.any(result[mask] != image[mask], axis=-1).mean() > 0.9

    assert driver.find_element(By.ID, "brush-value").text == "20"
    driver.save_screenshot(str(tmp_path / "app.png"))
    assert (tmp_path / "app.png").stat().st_size > 10_000

    # Download: the result itself, named after the input.
    download = driver.find_element(By.ID, "download")
    assert download.get_attribute("download") == "ramp-removed.png"
    assert np.array_equal(_blob(driver, _fetched("download", "href")), result)
    # Chained edits: the result becomes the input, with a fresh mask and no result yet.
    driver.find_element(By.ID, "chain").click()
    wait.until(lambda d: d.execute_script("return !document.getElementById('result').src"))
    assert np.array_equal(_blob(driver, _fetched("original", "src")), result)
    assert driver.execute_script(PAINTED) == 0


def test_undo_redo_clear_and_the_brush_keys(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    path = tmp_path / "small.png"
    path.write_bytes(png(photo(WIDTH, HEIGHT)))
    driver, wait = browser, WebDriverWait(browser, 60)
    driver.get(server)
    driver.find_element(By.ID, "open-image").send_keys(str(path))
    canvas = driver.find_element(By.ID, "paint")
    wait.until(lambda d: canvas.get_attribute("width") == str(WIDTH))

    ActionChains(driver).move_to_element(canvas).click().perform()
    dot = driver.execute_script(PAINTED)
    assert dot > 0
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.CONTROL, "z")
    assert driver.execute_script(PAINTED) == 0
    body.send_keys(Keys.CONTROL, Keys.SHIFT, "z")
    assert driver.execute_script(PAINTED) == dot
    driver.find_element(By.ID, "clear").click()
    assert driver.execute_script(PAINTED) == 0

    brush = driver.find_element(By.ID, "brush")
    before = int(brush.get_attribute("value"))
    body.send_keys("]")
    assert int(brush.get_attribute("value")) > before
    body.send_keys("[", "[")
    assert int(brush.get_attribute("value")) < before
    assert driver.find_element(By.ID, "brush-value").text == brush.get_attribute("value")

    driver.find_element(By.ID, "run").click()  # nothing painted: said on the page, not sent
    error = driver.find_element(By.ID, "error")
    wait.until(lambda d: "Paint over what to remove first" in error.text)
    assert driver.execute_script("return window.dcgdLast") is None
