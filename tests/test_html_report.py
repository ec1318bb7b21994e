"""HTML reports (``--report-html``): built from the --json / --report-json objects, one
self-contained file, rendered by a real browser (headless Chromium) in the tests.

The browser tests skip with a reason where no Chromium is installed (Debian: ``apt-get
install chromium``); the page-building tests run everywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tensorsmith.html import MAX_BYTES, clean, conversion_html, svg, write_recipe_pages

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="no headless Chromium installed (Debian: apt-get install chromium)"
)


# ---------------------------------------------------------------------------
# helpers: the CLI in a subprocess (its real argv goes into the page), the browser, a DOM reader


def _cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "tensorsmith.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def _chromium(*args: str) -> subprocess.CompletedProcess:
    assert BROWSER is not None
    return subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


class Dom(HTMLParser):
    """Elements (tag, attrs, text inside) of the DOM Chromium dumps after running the page."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[dict] = []
        self._open: list[dict] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        el = {
            "tag": tag,
            "attrs": dict(attrs),
            "text": "",
            "own": "",
            "parents": [p["tag"] for p in self._open],
        }
        el["classes"] = set((el["attrs"].get("class") or "").split())
        el["chain"] = [set((p["attrs"].get("class") or "").split()) for p in self._open]
        self.elements.append(el)
        if tag not in ("meta", "br", "input", "img", "link", "hr"):  # HTML's void elements
            self._open.append(el)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if self._open and self._open[-1]["tag"] == tag:
            self._open.pop()

    def handle_endtag(self, tag):
        if any(el["tag"] == tag for el in self._open):
            while self._open.pop()["tag"] != tag:
                pass

    def handle_data(self, data):
        for el in self._open:
            el["text"] += data
        if self._open:
            self._open[-1]["own"] += data

    def find(self, tag: str, cls: str | None = None, inside: str | None = None) -> list[dict]:
        return [
            el
            for el in self.elements
            if el["tag"] == tag
            and (cls is None or cls in el["classes"])
            and (inside is None or any(inside in c for c in el["chain"]))
        ]

    def chart(self, name: str) -> dict | None:
        figs = [el for el in self.find("figure", "chart") if name in el["classes"]]
        return figs[0] if figs else None

    def chart_labels(self, name: str) -> list[str]:
        return [
            el["own"]
            for el in self.elements
            if el["tag"] == "text"
            and "label" in el["classes"]
            and {"chart", name} <= set().union(*el["chain"])
        ]

    def chart_bars(self, name: str) -> list[dict]:
        return [
            el
            for el in self.elements
            if el["tag"] == "rect"
            and "bar" in el["classes"]
            and any({"chart", name} <= c for c in el["chain"])
            and any("row" in c for c in el["chain"])  # not the legend's swatches
        ]


def _render(page: Path, tmp_path: Path, shot: str = "page.png") -> Dom:
    """The DOM after Chromium ran the page, and a laptop-size screenshot of it."""
    dumped = _chromium("--virtual-time-budget=3000", "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    png = tmp_path / shot
    snap = _chromium("--window-size=1366,900", f"--screenshot={png}", page.as_uri())
    assert snap.returncode == 0 and png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return Dom(dumped.stdout)


def _embedded(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="report-data">') + len(
        '<script type="application/json" id="report-data">'
    )
    return json.loads(text[start : text.index("</script>", start)])


def _offline(page: Path) -> None:
    """One file: nothing loaded from anywhere (the only URL is the SVG namespace)."""
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size <= MAX_BYTES
    assert "<link" not in text and " src=" not in text and "@import" not in text and "url(" not in text
    assert text.replace("http://www.w3.org/2000/svg", "").count("http") == 0


# ---------------------------------------------------------------------------
# building pages (no browser)


def test_svg_chart_draws_one_bar_per_value_and_escapes_labels():
    rows = [
        svg.Row("<script>alert(1)</script>", [3.0, 1.0], mark=2.0),
        svg.Row("b&c", [None, 4.0]),
    ]
    out = svg.render(svg.Chart(rows, series=("before", "after"), mark_label="limit", css_class="t"))
    assert "<script>" not in out and "&lt;script&gt;" in out and "b&amp;c" in out
    bars = re.findall(r'<rect class="bar (s\d)[^"]*" x="\d+" y="\d+" width="[\d.]+" height="12"', out)
    assert bars == ["s0", "s1", "s1"]  # one bar per value, None draws none (legend swatches excluded)
    # one threshold mark (plus the legend's)
    assert out.count('<line class="mark"') == 2
    # a log axis covers the decades of the values: 1e-7 .. 1e-3
    log = svg.render(svg.Chart([svg.Row("x", [2e-7]), svg.Row("y", [5e-4])], log=True))
    assert ">1e-07<" in log and ">0.001<" in log
    assert svg.render(svg.Chart([])) == ""


def test_conversion_page_escapes_every_string_and_embeds_the_same_report():
    evil = '<img src=x onerror="alert(1)">'
    report = {
        "status": "ok",
        "input": evil,
        "output": "out.onnx",
        "source_format": "onnx",
        "target": "onnx",
        "nodes_before": 2,
        "nodes_after": 1,
        "ops_before": {evil: 2},
        "ops_after": {evil: 1},
        "passes": [{"name": evil, "modified": True, "seconds": 0.1, "runs": 1, "stats": {evil: 1}}],
        "verification": {
            "passed": False,
            "rtol": 1e-4,
            "atol": 1e-5,
            "inputs": evil,
            "samples": 1,
            "input_shapes": {evil: [1, 2]},
            "notes": [evil],
            "outputs": [
                {
                    "name": evil,
                    "shape": [1],
                    "max_abs_diff": float("nan"),
                    "max_rel_diff": float("inf"),
                    "scale": 1.0,
                    "passed": False,
                    "reason": "</script><script>alert(2)</script>",
                }
            ],
        },
        "notes": [evil],
        "error": evil,
        "precision": None,
    }
    page = conversion_html(report, argv=["tensorsmith", "optimize", evil], versions={"onnx": evil})
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "<script>alert(2)" not in page and page.count("<script") == 2  # the data block and the toggle
    # the embedded report is the --json object, non-finite floats as --json prints them
    start = page.index('id="report-data">') + len('id="report-data">')
    data = json.loads(page[start : page.index("</script>", start)])
    assert data == clean(report)
    assert data["verification"]["outputs"][0]["max_abs_diff"] is None


def test_verification_chart_draws_the_noise_floor_beside_the_difference():
    report = {
        "status": "ok",
        "output": "out.onnx",
        "target": "onnx",
        "verification": {
            "passed": True,
            "rtol": 1e-4,
            "atol": 1e-5,
            "samples": 1,
            "outputs": [
                {
                    "name": "note",
                    "shape": [1, 88],
                    "max_abs_diff": 7.4e-5,
                    "max_rel_diff": 1.6e-4,
                    "scale": 0.46,
                    "passed": True,
                    "reason": "",
                    "noise_floor": 7.41e-5,
                },
                {
                    "name": "onset",
                    "shape": [1, 88],
                    "max_abs_diff": 2e-6,
                    "max_rel_diff": 4e-6,
                    "scale": 0.5,
                    "passed": True,
                    "reason": "",
                },
            ],
        },
        "precision": None,
    }
    page = conversion_html(report, argv=["tensorsmith", "convert", "m"], versions={})
    verification = page[page.index('id="verification"') :]
    assert "noise floor" in verification and "7.41e-05" in verification
    svg_part = verification[verification.index("<svg") : verification.index("</svg>")]
    assert svg_part.count("<rect") >= 3  # two bars for "note", one for "onset" (no floor measured)
    plain = dict(
        report, verification=dict(report["verification"], outputs=report["verification"]["outputs"][1:])
    )
    assert "noise floor" not in conversion_html(plain, argv=[], versions={})


def test_report_html_to_a_missing_folder_is_exit_2_before_any_work(tmp_path):
    out = tmp_path / "m.onnx"
    p = _cli("optimize", SAMPLES / "cnn.onnx", "-o", out, "--report-html", tmp_path / "nope" / "r.html")
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: --report-html") and p.stderr.count("\n") == 1
    assert not out.exists()


# ---------------------------------------------------------------------------
# rendered by Chromium


def _check_conversion_dom(dom: Dom, rep: dict, page: Path) -> None:
    # the theme toggle's script ran (it un-hides the button)
    button = [el for el in dom.find("button") if el["attrs"].get("id") == "theme"]
    assert button and "hidden" not in button[0]["attrs"]
    # graph before/after: one row per op type, two bars (before, after) where counts are > 0
    ops = set(rep["ops_before"]) | set(rep["ops_after"])
    assert sorted(dom.chart_labels("ops")) == sorted(svg.short_label(o) for o in ops)
    nonzero = sum(1 for o in ops if rep["ops_before"].get(o)) + sum(1 for o in ops if rep["ops_after"].get(o))
    assert len(dom.chart_bars("ops")) == nonzero
    assert dom.chart_labels("passes") == [p["name"] for p in rep["passes"]]
    p = rep["precision"]
    # latency: FP32, every layout timed, the result; size; the gate per output
    assert len(dom.chart_labels("latency")) == 2 + len(p["layouts"])
    assert dom.chart("size") is not None
    assert dom.chart_labels("gate") == [o["name"] for o in p["gate"]["outputs"]]
    # the precision map lists every compute node
    pmap_rows = [el for el in dom.find("tr", inside="pmap") if "tbody" in el["parents"]]
    assert len(pmap_rows) == len(p["precision_map"]) == p["compute_nodes"]
    assert dom.chart("fallback") is not None
    if p.get("sensitivity"):
        assert len(dom.chart_labels("sensitivity")) == min(40, len(p["sensitivity"]))
    else:
        assert dom.chart("sensitivity") is None
    assert _embedded(page)["precision"]["gate"] == p["gate"]
    _offline(page)


@needs_browser
def test_int8_conversion_page_renders_in_chromium(tmp_path):
    page = tmp_path / "r.html"
    out = tmp_path / "m.int8.onnx"
    p = _cli(
        "convert",
        SAMPLES / "resblock.onnx",
        "-o",
        out,
        "--precision",
        "int8",
        "--calib",
        "random",
        "--min-speedup",
        "0",
        "--json",
        "--report-html",
        page,
    )
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    dom = _render(page, tmp_path)
    _check_conversion_dom(dom, rep, page)
    text = "".join(el["text"] for el in dom.find("main"))
    # the command line to reproduce it, with the real flags
    assert "tensorsmith convert" in text and "--precision int8" in text and "--report-html" in text
    assert "onnxruntime" in text  # tool versions


@needs_browser
def test_failed_int8_conversion_page_shows_the_failure_and_the_sensitivity(tmp_path):
    """A gate that cannot pass: exit 4, nothing written but the page, which shows the exit
    code, the error, and the per-node sensitivity the fallback measured."""
    page = tmp_path / "r.html"
    out = tmp_path / "m.int8.onnx"
    p = _cli(
        "convert",
        SAMPLES / "resblock.onnx",
        "-o",
        out,
        "--precision",
        "int8",
        "--calib",
        "random",
        "--min-cosine",
        "0.99999999",
        "--fallback-budget",
        "1",
        "--report-html",
        page,
    )
    assert p.returncode == 4, p.stderr
    assert not out.exists() and page.is_file()
    data = _embedded(page)
    assert data["exit_code"] == 4 and data["status"] != "ok" and "accuracy gate failed" in data["error"]
    sens = data["precision"]["sensitivity"]
    assert sens
    dom = _render(page, tmp_path)
    labels = dom.chart_labels("sensitivity")
    assert len(labels) == min(40, len(sens)) and labels[0] == svg.short_label(
        f"{sens[0]['name']} ({sens[0]['op']})"
    )
    cards = {el["text"].strip() for el in dom.find("div", "v")}
    assert "4" in cards
    assert [el for el in dom.find("span", "badge") if el["text"].strip() == data["status"]]


@pytest.mark.thirdparty
@needs_browser
def test_int8_page_of_a_real_model_on_real_images(tmp_path):
    """PP-OCR's direction classifier (MobileNetV3, from the rapidocr wheel), calibrated
    and gated on real images: the page a user gets from `convert --precision int8`."""
    import thirdparty as tp  # tests/ is on sys.path under pytest's rootdir conftest-less layout

    try:
        model = tp.fetch("ppocr_cls_v2")
        calib, val = tp.image_sets(tmp_path / "images", "text")
    except tp.ThirdPartyUnavailable as exc:
        pytest.skip(str(exc))
    page = tmp_path / "r.html"
    p = _cli(
        "convert",
        model,
        "-o",
        tmp_path / "m.onnx",
        "--precision",
        "int8",
        "--calib",
        calib,
        "--val",
        val,
        "--calib-preprocess",
        "resize=48x192,mean=0.5,std=0.5,layout=NCHW,color=BGR",
        "--input-shape",
        "x=1x3x48x192",
        "--min-speedup",
        "0",
        "--json",
        "--report-html",
        page,
    )
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    dom = _render(page, tmp_path)
    _check_conversion_dom(dom, rep, page)
    assert "save_infer_model/scale_0.tmp_1" in dom.chart_labels("gate")[0] or any(
        "save_infer_model" in label for label in dom.chart_labels("gate")
    )


def _recipe(folder: Path) -> Path:
    recipe = {
        "version": 1,
        "output_dir": "out",
        "output": "{model}/{target}{ext}",
        "report_html": "index.html",
        "defaults": {"calib": "random", "min_speedup": 0},
        "models": [
            {"name": "cnn", "path": str(SAMPLES / "cnn.onnx"), "input_shape": {"input": "1x3x32x32"}},
            {"name": "resblock", "path": str(SAMPLES / "resblock.onnx")},
        ],
        "targets": [
            {"name": "onnx", "to": "onnx"},
            {"name": "int8", "to": "onnx", "precision": "int8"},
        ],
        # a gate no INT8 model passes, and no fallback: this job fails with exit 4
        "jobs": [{"name": "resblock-int8", "min_cosine": 0.99999999, "fallback_budget": 0}],
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@needs_browser
def test_recipe_page_renders_the_matrix_in_chromium(tmp_path):
    recipe = _recipe(tmp_path)
    p = _cli("run", recipe, "-j", "1", "--report-json", tmp_path / "run.json")
    assert p.returncode == 1, p.stderr  # one job failed
    run = json.loads((tmp_path / "run.json").read_text())
    index = tmp_path / "out" / "index.html"  # the recipe's report_html, relative to output_dir
    assert index.is_file()
    _offline(index)
    dom = _render(index, tmp_path)
    names = {j["name"] for j in run["jobs"]}
    assert names == {"cnn-onnx", "cnn-int8", "resblock-onnx", "resblock-int8"}
    # failures first, with their one-line reason
    failures = [el for el in dom.elements if el["attrs"].get("id") == "failures"]
    assert (
        failures and "resblock-int8" in failures[0]["text"] and "accuracy gate failed" in failures[0]["text"]
    )
    assert dom.elements.index(failures[0]) < dom.elements.index(dom.find("table", "matrix")[0])
    # the matrix: a cell per job, each linking to that job's page beside its output
    cells = [el for el in dom.find("a", "cell")]
    assert len(cells) == 4
    for cell in cells:
        name = next(n for n in names if n in cell["text"])
        job = next(j for j in run["jobs"] if j["name"] == name)
        target = (index.parent / cell["attrs"]["href"]).resolve()
        assert target == (tmp_path / "out" / f"{job['output']}.html").resolve() and target.is_file()
        assert ("failed" in cell["classes"]) == (job["status"] == "failed")
    # speed-up chart: the INT8 jobs that ran through the timing
    timed = [
        j["name"] for j in run["jobs"] if ((j.get("report") or {}).get("precision") or {}).get("latency")
    ]
    assert sorted(dom.chart_labels("speedup")) == sorted(timed)
    # a job's page renders too, with its output names
    job_page = tmp_path / "out" / "cnn" / "int8.onnx.html"
    job_dom = _render(job_page, tmp_path, "job.png")
    gate_outputs = [
        o["name"]
        for o in next(j for j in run["jobs"] if j["name"] == "cnn-int8")["report"]["precision"]["gate"][
            "outputs"
        ]
    ]
    assert job_dom.chart_labels("gate") == gate_outputs
    # run again with --report-html: every passing job is cached and says so
    again = tmp_path / "again.html"
    p2 = _cli("run", recipe, "-j", "1", "--report-html", again)
    assert p2.returncode == 1, p2.stderr
    dom2 = _render(again, tmp_path, "again.png")
    cached = [el for el in dom2.find("a", "cell") if "cached:" in el["text"]]
    assert len(cached) == 3


def test_recipe_pages_without_reports_still_list_every_job(tmp_path):
    """A dry run / cached jobs from an old manifest have no conversion report: no job page,
    the matrix still shows the job (no link)."""
    run = {
        "recipe": "r.yaml",
        "output_dir": str(tmp_path),
        "exit_code": 0,
        "counts": {"total": 1, "would-run": 1},
        "jobs": [{"name": "a-b", "model": "a", "target": "b", "status": "would-run", "output": "a/b.onnx"}],
    }
    page = write_recipe_pages(run, tmp_path / "i.html")
    text = page.read_text()
    assert "a-b" in text and 'class="cell would-run"' in text and "href=" not in text.split("<main>")[1]


def test_a_huge_model_still_gets_a_page_under_8_mb(tmp_path):
    """100,000 compute nodes: the precision map table shows the first 5,000 (the chart counts
    all of them) and the report is not embedded, so the page stays one file under 8 MB."""
    from tensorsmith.html import write_conversion_page
    from tensorsmith.html.precision import MAP_ROWS

    n = 100_000
    pmap = [
        {
            "name": f"/encoder/layer.{i}/attention/self/MatMul_{i}",
            "op": "MatMul",
            "precision": "int8",
            "reason": "quantized",
        }
        for i in range(n)
    ]
    report = {
        "status": "ok",
        "input": "big.onnx",
        "target": "onnx",
        "precision": {"precision": "int8", "precision_map": pmap},
    }
    page = write_conversion_page(report, tmp_path / "big.html")
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size <= MAX_BYTES
    assert 'id="report-data"' not in text and "not embedded" in text
    assert text.count("<tr><td>/encoder/layer.") == MAP_ROWS
    assert f"the first {MAP_ROWS} of {n} nodes" in text and f"{n} int8" in text


# ---------------------------------------------------------------------------
# TensorRT: the prepared ONNX (no GPU needed) and a build with the recording stand-in


def test_trt_prepare_only_page_has_lint_profiles_and_the_build_command(tmp_path):
    from typer.testing import CliRunner

    from tensorsmith.cli import app

    page = tmp_path / "trt.html"
    res = CliRunner().invoke(
        app,
        [
            "convert",
            str(SAMPLES / "cnn.onnx"),
            "--to",
            "trt",
            "--prepare-only",
            "-o",
            str(tmp_path / "m.plan"),
        ]
        + ["--json", "--report-html", str(page)],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    dom = Dom(page.read_text(encoding="utf-8"))
    trt = [el for el in dom.find("section") if el["attrs"].get("id") == "tensorrt"]
    assert trt and rep["build_command"] in trt[0]["text"]
    assert "lint: no findings" in trt[0]["text"] and rep["lint"]["target_version"] in trt[0]["text"]
    profile = rep["lint"]["profiles"]["input"]
    row = "x".join(map(str, profile["max"]))
    assert row in trt[0]["text"] and profile["source"] in trt[0]["text"]
    assert dom.chart_labels("verify") == [o["name"] for o in rep["verification"]["outputs"]]


def test_trt_build_page_with_the_recording_stand_in(tmp_path, monkeypatch):
    """``build --report-html`` through tests/fake_tensorrt.py (NOT TensorRT: it records the
    calls and runs the network with onnxruntime), so the page path is covered without a GPU."""
    import fake_tensorrt
    from typer.testing import CliRunner

    from tensorsmith import machine
    from tensorsmith.cli import app
    from tensorsmith.convert import trt as trt_backend

    monkeypatch.setattr(
        machine, "current_gpu", lambda: {"name": "Fake GPU (test)", "compute_capability": "8.6"}
    )
    monkeypatch.setattr(trt_backend, "missing_for_build", lambda: [])
    monkeypatch.setattr(trt_backend.memory, "device_memory", lambda: fake_tensorrt.HostMemory())
    fake_tensorrt.install(monkeypatch)
    page = tmp_path / "build.html"
    res = CliRunner().invoke(
        app,
        [
            "build",
            str(SAMPLES / "cnn.onnx"),
            "-o",
            str(tmp_path / "m.plan"),
            "--json",
            "--report-html",
            str(page),
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    data = _embedded(page)
    assert data["tensorrt_version"] == rep["tensorrt_version"] == fake_tensorrt.__version__
    dom = Dom(page.read_text(encoding="utf-8"))
    cards = {el["own"].strip() for el in dom.find("div", "v")}
    assert rep["tensorrt_version"] in cards and f"{rep['typing']} typed" in cards
    trt = [el for el in dom.find("section") if el["attrs"].get("id") == "tensorrt"][0]["text"]
    assert "x".join(map(str, rep["profiles"]["input"]["max"])) in trt
    assert dom.chart_labels("verify") == [o["name"] for o in rep["verification"]["outputs"]]
    # a build that fails (the parser rejects Conv) still writes its page, with exit code 3
    fake_tensorrt.install(monkeypatch, reject_ops={"Conv"})
    bad = tmp_path / "bad.html"
    res = CliRunner().invoke(
        app, ["build", str(SAMPLES / "cnn.onnx"), "-o", str(tmp_path / "b.plan"), "--report-html", str(bad)]
    )
    assert res.exit_code == 3
    data = _embedded(bad)
    assert data["exit_code"] == 3 and data["parser_errors"] and "Conv" in bad.read_text()
