"""The README's screenshot of ``python -m dcgd app`` (``experiments/figures/app.png``).

    python experiments/figures/app_screenshot.py \
        --checkpoint runs/quickstart/checkpoints/last.ckpt --out experiments/figures/app.png

Serves the app on a free loopback port, opens a built-in procedural scene (64 px, seed 3)
in headless Chromium (Debian's ``chromium`` and ``chromium-driver``), paints over one of its
look-alike objects, types T_info / T_mask from the scene's labels, runs, and saves the window.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from PIL import Image

from dcgd.app.server import create_app
from dcgd.data.procedural import render_scene
from dcgd.sampling.pipeline import load_pipeline


def serve(app) -> tuple[str, uvicorn.Server]:
    """``app`` under uvicorn in a thread on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("experiments/figures/app.png"))
    # 64: the quick start's training size, so the model sees the scene as it was trained.
    parser.add_argument("--size", type=int, default=64, help="side of the scene")
    parser.add_argument("--seed", type=int, default=3, help="which scene")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    scene = render_scene(np.random.default_rng(args.seed), args.size)
    # The rightmost object: the compare slider then shows the original left of it.
    target = max(scene.objects, key=lambda o: o.x)
    side = target.alpha.shape[0]
    others = np.zeros(scene.image.shape[:2], np.uint8)
    others[target.y : target.y + side, target.x : target.x + side] = 1
    folder = Path(tempfile.mkdtemp())
    Image.fromarray(scene.image).save(folder / "scene.png")

    url, server = serve(
        create_app(load_pipeline(args.checkpoint), model_name=args.checkpoint.as_posix())
    )
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,860")
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=shutil.which("chromedriver"))
    )
    try:
        wait = WebDriverWait(driver, 120)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") != "")
        driver.find_element(By.ID, "open-image").send_keys(str(folder / "scene.png"))
        canvas = driver.find_element(By.ID, "paint")
        wait.until(lambda d: canvas.get_attribute("width") == str(args.size))
        scale = canvas.size["width"] / args.size  # screen pixels per image pixel
        brush = int(side * scale * 0.75)
        driver.execute_script(
            "const b = document.getElementById('brush'); b.value = arguments[0];"
            "b.dispatchEvent(new Event('input'));",
            brush,
        )
        centre = np.array([target.x + side / 2, target.y + side / 2]) * scale
        offset = centre - np.array([canvas.size["width"], canvas.size["height"]]) / 2
        x, y = int(offset[0] - side * scale * 0.25), int(offset[1] - side * scale * 0.25)
        reach = int(side * scale * 0.5)
        (
            ActionChains(driver)
            .move_to_element_with_offset(canvas, x, y)
            .click_and_hold()
            .move_by_offset(reach, 0)
            .move_by_offset(0, reach)
            .move_by_offset(-reach, 0)
            .move_by_offset(0, -reach)
            .release()
            .perform()
        )
        driver.find_element(By.ID, "t_info").send_keys(scene.label(others))
        driver.find_element(By.ID, "t_mask").send_keys(target.label)
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: d.execute_script("return window.dcgdLast !== null"))
        wait.until(lambda d: d.execute_script("return document.getElementById('result').complete"))
        split = max(5, int(100 * (target.x - side / 2) / args.size))
        driver.execute_script(
            "const s = document.getElementById('split'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('input')); document.activeElement.blur();",
            split,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
        print(f"wrote {args.out} (scene {scene.scene!r}, removed a {target.label})")
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
