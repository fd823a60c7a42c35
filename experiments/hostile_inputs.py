"""Hostile inputs against the CLI, as a demanding new user would try them: no traceback, no
timeout, no file changed or lost, and a refusal is one ``error:`` line (issue 13's check).

    python experiments/hostile_inputs.py runs/quickstart/checkpoints/last.ckpt

Each case runs ``python -m dcgd ...`` in a fresh folder under the system's temp dir and prints
``[ok]`` or ``[BAD]`` with the exit code and the line the user saw. A folder run that skips
files exits 1 with one line per skipped file (documented), which this strict rule flags.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CKPT = Path(sys.argv[1]).resolve()
REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "experiments" / "quickstart.yaml")
ABLATION = str(REPO / "sweeps" / "quickstart_ablation.yaml")
W = Path(tempfile.gettempdir()) / "dcgd-hostile-inputs"
shutil.rmtree(W, ignore_errors=True)
W.mkdir(parents=True)
os.chdir(W)


def img(name, arr, mode=None):
    p = W / name
    p.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)).save(p)
    return p


rng = np.random.default_rng(1)
photo = img("photo.png", rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
hole = np.zeros((40, 56), np.uint8)
hole[10:25, 20:40] = 255
mask = img("photo_mask.png", hole)
empty = img("empty_mask.png", np.zeros((40, 56), np.uint8))
wrong = img("wrong_mask.png", np.zeros((20, 20), np.uint8) + 255)
gray = img("gray.png", rng.integers(0, 255, (40, 56), dtype=np.uint8))
la = W / "la.png"
Image.fromarray(rng.integers(0, 255, (40, 56, 2), dtype=np.uint8), "LA").save(la)
pal = W / "pal.png"
Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).convert("P").save(pal)
cmyk = W / "cmyk.jpg"
Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).convert("CMYK").save(cmyk)
textpng = W / "text.png"
textpng.write_text("not an image")
tiny = img("tiny.png", np.zeros((1, 1, 3), np.uint8))
tiny_mask = img("tiny_mask.png", np.full((1, 1), 255, np.uint8))
link = W / "link_out.png"
link.symlink_to(photo)

folder = W / "folder"
folder.mkdir()
shutil.copy(photo, folder / "a.png")
shutil.copy(mask, folder / "a_mask.png")
(folder / "b.png").write_bytes(b"\x89PNG broken")
shutil.copy(mask, folder / "b_mask.png")
shutil.copy(photo, folder / "c d é.png")
shutil.copy(mask, folder / "c d é_mask.png")
shutil.copy(photo, folder / "nomask.png")

existing = W / "existing.png"
shutil.copy(photo, existing)

base = ["--checkpoint", str(CKPT), "--steps", "2", "--prompt-mode", "none"]
R = ["remove", *base]


def digest():
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in W.rglob("*")
        if p.is_file() and not p.is_symlink() and "mlflow" not in p.name and "runs" not in p.parts
    }


CASES = [
    ("remove w=-inf", [*R, "--image", photo, "--mask", mask, "--out", "o1.png", "--w", "-inf"]),
    ("remove w=1e400", [*R, "--image", photo, "--mask", mask, "--out", "o2.png", "--w", "1e400"]),
    (
        "remove steps=0",
        [
            "remove",
            "--checkpoint",
            CKPT,
            "--steps",
            "0",
            "--image",
            photo,
            "--mask",
            mask,
            "--out",
            "o3.png",
        ],
    ),
    (
        "remove steps=-3",
        [
            "remove",
            "--checkpoint",
            CKPT,
            "--steps",
            "-3",
            "--image",
            photo,
            "--mask",
            mask,
            "--out",
            "o3b.png",
        ],
    ),
    (
        "remove dilate=-2",
        [*R, "--image", photo, "--mask", mask, "--out", "o4.png", "--dilate", "-2"],
    ),
    ("remove empty mask", [*R, "--image", photo, "--mask", empty, "--out", "o5.png"]),
    ("remove mask size", [*R, "--image", photo, "--mask", wrong, "--out", "o6.png"]),
    ("remove text as image", [*R, "--image", textpng, "--mask", mask, "--out", "o7.png"]),
    ("remove 1x1", [*R, "--image", tiny, "--mask", tiny_mask, "--out", "o8.png"]),
    ("remove out=mask", [*R, "--image", photo, "--mask", mask, "--out", mask]),
    ("remove out=symlink to input", [*R, "--image", photo, "--mask", mask, "--out", link]),
    ("remove out existing", [*R, "--image", photo, "--mask", mask, "--out", existing]),
    (
        "remove out in missing dir",
        [*R, "--image", photo, "--mask", mask, "--out", W / "new/dir/o.png"],
    ),
    ("remove gray", [*R, "--image", gray, "--mask", mask, "--out", "o_gray.png"]),
    ("remove LA", [*R, "--image", la, "--mask", mask, "--out", "o_la.png"]),
    ("remove P", [*R, "--image", pal, "--mask", mask, "--out", "o_pal.png"]),
    ("remove CMYK", [*R, "--image", cmyk, "--mask", mask, "--out", "o_cmyk.jpg"]),
    ("remove folder", [*R, "--image", folder, "--mask", folder, "--out", W / "folder_out"]),
    ("remove folder out=in", [*R, "--image", folder, "--mask", folder, "--out", folder]),
    ("masks reversed bucket", ["masks", "--out", "m1", "--count", "2", "--bucket", "0.5-0.4"]),
    ("masks count -1", ["masks", "--out", "m2", "--count", "-1", "--bucket", "0.1-0.2"]),
    (
        "masks size 0",
        ["masks", "--out", "m3", "--count", "1", "--size", "0", "--bucket", "0.1-0.2"],
    ),
    (
        "masks full bucket tiny",
        [
            "masks",
            "--out",
            "m4",
            "--count",
            "1",
            "--size",
            "8",
            "--bucket",
            "0.99-1.0",
            "--kind",
            "strokes",
        ],
    ),
    ("export out=ckpt", ["export", "--checkpoint", CKPT, "--out", CKPT]),
    (
        "benchmark count 0",
        ["benchmark", "removal", "--checkpoint", CKPT, "--out", "b1", "--count", "0"],
    ),
    (
        "benchmark w nan",
        ["benchmark", "removal", "--checkpoint", CKPT, "--out", "b2", "--w", "nan"],
    ),
    ("benchmark out=file", ["benchmark", "removal", "--checkpoint", CKPT, "--out", existing]),
    (
        "evaluate empty pred",
        ["evaluate", "--pred", W / "nothing", "--target", folder, "--mask", folder],
    ),
    ("test ckpt=dir", ["test", "--config", QUICKSTART, "--ckpt_path", str(W)]),
    (
        "fit lr nan",
        ["fit", "--config", QUICKSTART, "--model.init_args.lr", "nan", "--trainer.max_steps", "1"],
    ),
    (
        "fit size 0",
        ["fit", "--config", QUICKSTART, "--data.init_args.size", "0", "--trainer.max_steps", "1"],
    ),
    (
        "fit paste 2",
        [
            "fit",
            "--config",
            QUICKSTART,
            "--data.init_args.paste_probability",
            "2",
            "--trainer.max_steps",
            "1",
        ],
    ),
    ("sweep binary spec", ["sweep", "--config", CKPT, "--checkpoint", CKPT]),
    (
        "sweep n-trials -1",
        ["sweep", "--config", ABLATION, "--checkpoint", CKPT, "--n-trials", "-1"],
    ),
    ("compare missing exp", ["compare", "--experiment", "nope-nope"]),
    ("describe missing cfg", ["describe", "--config", "nope.yaml"]),
]


def main() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{W}/mlflow.db"}
    bad = 0
    for name, argv in CASES:
        before = digest()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "dcgd", *map(str, argv)],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            rc, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired:
            rc, err = "TIMEOUT", ""
        after = digest()
        changed = [str(p.relative_to(W)) for p in before if p in after and before[p] != after[p]]
        lost = [str(p.relative_to(W)) for p in before if p not in after]
        tb = "Traceback" in err
        errs = [line for line in err.splitlines() if line.startswith("error:")]
        flag = (
            "BAD"
            if (tb or rc == "TIMEOUT" or changed or lost or (rc not in (0,) and len(errs) != 1))
            else "ok"
        )
        bad += flag == "BAD"
        last = errs[0] if errs else (err.strip().splitlines() or [""])[-1]
        print(f"[{flag}] {name}: rc={rc} tb={tb} changed={changed} lost={lost}\n      {last[:300]}")
    print(f"{bad} bad of {len(CASES)}")


main()
