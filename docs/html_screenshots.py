"""Make the README's screenshots of the HTML reports (``docs/html-*.png``).

    PYTHONPATH=. python docs/html_screenshots.py [WORK_DIR]

Runs ``convert --precision int8 --report-html`` on a real model (PP-OCR's direction
classifier from the rapidocr wheel, calibrated and gated on real images: see
tests/thirdparty.py) and ``run --report-html`` on a small recipe over the sample
models, then takes laptop-size (1366 px) screenshots with headless Chromium. The
PNGs are downscaled and reduced to a palette (Pillow) to stay a few tens of KB.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import thirdparty as tp  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), "chromium")
WIDTH = 1366


def cli(*args) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "tensorsmith.cli", *map(str, args)], capture_output=True, text=True
    )
    print(
        " ".join(map(str, args[:3])),
        "->",
        p.returncode,
        p.stderr.strip().splitlines()[-1:] if p.stderr else "",
    )


def chromium(*args: str) -> str:
    base = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=180).stdout


def top_of(page: Path, element_id: str) -> int:
    """Pixel offset of an element in the page laid out at WIDTH (a copy of the page with a
    script that writes it into the DOM; the layout is the page's own)."""
    if not element_id:
        return 0
    probe = page.with_name(page.stem + ".probe.html")
    script = (
        "<script>document.body.setAttribute('data-top',"
        f"Math.round(document.getElementById('{element_id}').getBoundingClientRect().top));</script>"
    )
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8"
    )
    dom = chromium(f"--window-size={WIDTH},900", "--virtual-time-budget=2000", "--dump-dom", probe.as_uri())
    probe.unlink()
    return int(dom.split('data-top="', 1)[1].split('"', 1)[0])


def shot(page: Path, out: Path, *, element_id: str = "", height: int = 860, dark: bool = False) -> None:
    top = max(0, top_of(page, element_id) - 8)
    full = out.with_suffix(".full.png")
    flags = ["--force-dark-mode"] if dark else []
    chromium(*flags, f"--window-size={WIDTH},{top + height}", f"--screenshot={full}", page.as_uri())
    img = Image.open(full).convert("RGB").crop((0, top, WIDTH, top + height))
    img = img.resize((1000, round(height * 1000 / WIDTH)), Image.LANCZOS)
    img.quantize(colors=48, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    full.unlink()
    print(out, out.stat().st_size, "bytes")


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ts-html-"))
    work.mkdir(parents=True, exist_ok=True)
    model = tp.fetch("ppocr_cls_v2")
    calib, val = tp.image_sets(work / "images", "text")
    page = work / "ppocr_cls.int8.html"
    cli(
        "convert", model, "-o", work / "ppocr_cls.int8.onnx", "--precision", "int8",
        "--calib", calib, "--val", val,
        "--calib-preprocess", "resize=48x192,mean=0.5,std=0.5,layout=NCHW,color=BGR",
        "--input-shape", "x=1x3x48x192", "--min-speedup", "0", "--report-html", page,
    )  # fmt: skip
    samples = REPO / "sample_models"
    recipe = {
        "version": 1,
        "output_dir": "out",
        "output": "{model}/{target}{ext}",
        "defaults": {"calib": "random"},
        "models": [
            {"name": "cnn", "path": str(samples / "cnn.onnx"), "input_shape": {"input": "1x3x32x32"}},
            {"name": "resblock", "path": str(samples / "resblock.onnx")},
            {"name": "mobilenet-block", "path": str(samples / "mobilenet_block.onnx")},
            {"name": "transformer", "path": str(samples / "transformer.onnx")},
        ],
        "targets": [
            {"name": "onnx", "to": "onnx"},
            {"name": "fp16", "to": "onnx", "precision": "fp16"},
            {"name": "int8", "to": "onnx", "precision": "int8"},
        ],
    }
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    index = work / "index.html"
    cli("run", work / "recipe.yaml", "-j", "1", "--report-html", index)
    docs = REPO / "docs"
    shot(page, docs / "html-conversion.png", element_id="precision", height=900)
    shot(index, docs / "html-recipe.png", height=760, dark=True)


if __name__ == "__main__":
    main()
