"""INT8: Q/DQ nodes in the graph, written by ``onnxruntime.quantization``.

Always on the graph *after* tensorsmith's passes (BatchNormalization folded
first: Q/DQ between an unfused Conv and its BN made real models slower than
FP32), on opset 13 or later (``onnx.version_converter`` first: per-channel Q/DQ
needs the ``axis`` attribute, and onnxruntime's quantizer otherwise writes a
model that does not load).

Defaults by target:

* onnxruntime CPU (``ort``): unsigned 8-bit activations (asymmetric), signed
  8-bit per-channel weights, ``QuantFormat.QDQ``;
* TensorRT (``trt``): signed 8-bit activations and weights, both symmetric
  (every zero point 0), weight scales per output channel; TensorRT 11 builds
  strongly typed networks from exactly these Q/DQ nodes.

``--int8-mode dynamic`` quantizes MatMul only (``quantize_dynamic``, which
onnxruntime runs as DynamicQuantizeMatMul): never Conv, whose ConvInteger form
was measured 5-7x slower than FP32.

Calibration runs once (its ranges are cached in a JSON file by onnxruntime's
``calibration_cache_path``); every later quantization with other exclusions
reuses them, which is what makes the speed and fallback searches affordable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from tensorsmith.errors import ConversionError, UsageError, short
from tensorsmith.precision import adaround, scale_search
from tensorsmith.precision.fp16 import ensure_node_names
from tensorsmith.precision.scale_search import search_report  # noqa: F401  (lower_int8 reads it here)

MIN_OPSET = 13
ELEMENTWISE = {"Add", "Mul", "Sub", "Div"}
# Ops onnxruntime's CPU provider runs in int8 without leaving the int8 chain.
CORE_OPS = [
    "Conv",
    "ConvTranspose",
    "MatMul",
    "Gemm",
    "Add",
    "Concat",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Resize",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Split",
    "Slice",
    "Pad",
]
CALIB_METHODS = ("minmax", "entropy", "percentile", "mse")
ENTROPY_BINS = 512
MSE_BINS = 2048  # histogram of the mse search (scale_search.py)
PERCENTILE = 99.99
POOLED = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"}


@contextlib.contextmanager
def quiet():
    """onnxruntime.quantization logs warnings through the root logger, its calibration
    sessions through onnxruntime's default logger, and its entropy/percentile calibrators
    print to stdout; keep all three off the console (a failure comes back as an
    exception, reported in one line)."""
    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(4)
    try:
        # the entropy/percentile calibrators print() their progress: stdout is --json's
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        root.setLevel(level)
        ort.set_default_logger_severity(2)  # onnxruntime's default: warnings


def opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def prepare(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Opset >= 13, unique node names, shapes inferred. Returns (model, notes)."""
    notes = []
    src = opset(proto)
    if src < MIN_OPSET:
        try:
            proto = onnx.version_converter.convert_version(proto, MIN_OPSET)
        except Exception as exc:
            raise ConversionError(
                f"cannot upgrade the model from opset {src} to {MIN_OPSET} for INT8: {short(exc, 200)}"
            ) from exc
        notes.append(f"opset upgraded {src} -> {MIN_OPSET} (per-channel Q/DQ needs it)")
    else:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        proto = copy
    ensure_node_names(proto)
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:
        pass
    return proto, notes


# ---------------------------------------------------------------------------
# which nodes are worth quantizing (onnxruntime CPU)


@dataclass
class Config:
    """One quantization layout: op types and excluded nodes (with why)."""

    name: str
    op_types: list[str] | None = None  # None: onnxruntime's default set
    exclude: dict[str, str] = field(default_factory=dict)  # node -> reason
    only: list[str] | None = None  # quantize just these nodes (the fallback's one-node-at-a-time models)


def _shapes(proto: onnx.ModelProto) -> dict[str, list]:
    out = {}
    for vi in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for t in proto.graph.initializer:
        out[t.name] = list(t.dims)
    return out


def speed_exclusions(proto: onnx.ModelProto) -> dict[str, str]:
    """Nodes whose Q/DQ costs more than it saves on onnxruntime's CPU provider (measured, README)."""
    shapes = _shapes(proto)
    inits = {t.name: t for t in proto.graph.initializer}
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    out: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in shapes:
            w = shapes[node.input[1]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            x = shapes.get(node.input[0])
            if producer.get(node.input[0]) in POOLED or (x and len(x) >= 3 and all(d == 1 for d in x[2:])):
                out[node.name] = (
                    "convolution on a 1x1 map (squeeze-excite): int8 saves nothing, costs accuracy"
                )
            elif len(w) >= 3 and group > 1 and w[1] == 1:
                out[node.name] = "depthwise convolution: Q/DQ costs more than int8 saves"
            elif len(w) >= 3 and w[1] * group <= 4:
                out[node.name] = f"convolution with {w[1] * group} input channels: int8 is slower here"
        elif node.op_type in ELEMENTWISE and len(node.input) == 2:
            a, b = (shapes.get(i) for i in node.input)
            if node.input[1] in inits or node.input[0] in inits:
                out[node.name] = f"{node.op_type} with a constant: cheaper in float"
            elif (
                a is not None
                and b is not None
                and (len(a) != len(b) or any(x != y for x, y in zip(a, b, strict=False)))
            ):
                out[node.name] = f"broadcasting {node.op_type}: int8 kernel is slower than float"
        elif node.op_type in ("HardSwish", "HardSigmoid", "Sigmoid", "Div", "Softmax", "Mul"):
            out[node.name] = f"{node.op_type} between quantized layers: no int8 gain"
    return out


COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def activation_matmuls(proto: onnx.ModelProto) -> dict[str, str]:
    """MatMuls of two activations (attention scores and context): int8 costs them accuracy."""
    consts = {t.name for t in proto.graph.initializer} | {
        o for n in proto.graph.node if n.op_type == "Constant" for o in n.output
    }
    return {
        n.name: "MatMul of two activations (attention): int8 costs accuracy, little time"
        for n in proto.graph.node
        if n.op_type == "MatMul" and len(n.input) == 2 and not any(i in consts for i in n.input)
    }


def candidate_configs(proto: onnx.ModelProto, user_exclude: dict[str, str]) -> list[Config]:
    """The layouts timed against each other (and FP32); the fastest one that passes the gate wins.

    * ``all-ops``: onnxruntime's default op set, nothing excluded;
    * ``lean``: minus the nodes whose Q/DQ costs more than int8 saves (``speed_exclusions``);
    * ``core``: ``lean`` restricted to ops onnxruntime runs without leaving int8;
    * ``compute-only``: only the convolutions and matrix products with a weight, every
      activation, elementwise op and attention MatMul in float (mobile nets and
      transformers, where the glue between layers costs more in int8 than it saves).
    """
    lean = {**speed_exclusions(proto), **user_exclude}
    present = {n.op_type for n in proto.graph.node}
    configs = [
        Config("all-ops", None, dict(user_exclude)),
        Config("lean", None, lean),
        Config("core", CORE_OPS, lean),
    ]
    heavy = [op for op in COMPUTE_OPS if op in present]
    if heavy:
        ops = {n.name: n.op_type for n in proto.graph.node}
        keep = {k: v for k, v in {**lean, **activation_matmuls(proto)}.items() if ops.get(k) in heavy}
        configs.append(Config("compute-only", heavy, {**keep, **user_exclude}))
    return configs


# ---------------------------------------------------------------------------
# quantization


@dataclass
class Settings:
    target: str = "ort"  # ort | trt
    mode: str = "static"  # static | dynamic
    method: str = "minmax"
    per_channel: bool = True

    def quant_types(self):
        from onnxruntime.quantization import QuantType

        if self.target == "trt":
            return QuantType.QInt8, QuantType.QInt8
        return QuantType.QUInt8, QuantType.QInt8

    def extra_options(self) -> dict:
        opts: dict = {"WeightSymmetric": True}
        if self.target == "trt":
            opts.update(
                {"ActivationSymmetric": True, "WeightSymmetric": True, "QDQKeepRemovableActivations": True}
            )
        return opts

    def calib_options(self) -> dict:
        """Options of onnxruntime's calibrator (``create_calibrator``'s ``extra_options``).

        ``quantize_static`` passes only a few of these on, and leaves the entropy
        calibrator at 128 histogram bins for 128 quantized bins: with as many bins as
        quantization levels, the KL search has one candidate, the whole range, and
        ``entropy`` gives exactly ``minmax``'s scales. TensorRT's entropy calibration
        (``IInt8EntropyCalibrator2``; "8-bit Inference with TensorRT", GTC 2017) takes
        many more bins than levels and searches thresholds for 128 quantized bins (the positive half of
        INT8; 512 here: onnxruntime's KL search is a Python loop over the bins, 2048 took
        6.5 minutes on PP-OCR cls); percentile keeps 99.99% of the values (pytorch-quantization's and Model
        Optimizer's percentile default), not onnxruntime's 99.999%, which on a few
        hundred thousand values is the maximum again.
        """
        symmetric = self.target == "trt"
        if self.method == "entropy":
            return {"num_bins": ENTROPY_BINS, "num_quantized_bins": 128, "symmetric": symmetric}
        if self.method == "percentile":
            return {"num_bins": 2048, "percentile": PERCENTILE, "symmetric": True}
        if self.method == "mse":  # onnxruntime's DistributionCalibrater: signed-value histograms
            return {"num_bins": MSE_BINS}
        return {"symmetric": symmetric}

    def describe(self) -> dict:
        a, w = self.quant_types()
        return {
            "target": self.target,
            "mode": self.mode,
            "activations": "n/a (dynamic)"
            if self.mode == "dynamic"
            else f"{a.name}{' symmetric' if self.target == 'trt' else ''}",
            "weights": f"{w.name} symmetric{' per-channel' if self.per_channel else ''}",
            "format": "QDQ" if self.mode == "static" else "DynamicQuantizeMatMul (MatMulInteger)",
            "calibration_method": None if self.mode == "dynamic" else self.method,
        }


class _Reader:
    """onnxruntime's CalibrationDataReader over a list of samples, reporting progress."""

    def __init__(
        self,
        samples: list[dict[str, np.ndarray]],
        input_names: set[str],
        on_sample: Callable[[], None] | None,
    ):
        self.samples = samples
        self.names = input_names
        self.i = 0
        self.on_sample = on_sample

    def get_next(self):
        if self.i >= len(self.samples):
            return None
        s = self.samples[self.i]
        self.i += 1
        if self.on_sample:
            self.on_sample()
        return {k: v for k, v in s.items() if k in self.names}

    def __len__(self):
        return len(self.samples)

    def __iter__(self):
        return iter(self.get_next, None)


def _method(name: str, *, collect: bool = False):
    """onnxruntime's calibration method for ``name``. ``mse`` collects histograms with the
    ``Distribution`` calibrator (``collect``) and writes its ranges as a ``MinMax`` cache,
    which is what ``quantize_static`` is then told it reads."""
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "mse": CalibrationMethod.Distribution if collect else CalibrationMethod.MinMax,
    }[name]


def quantize(
    prepared_path: Path,
    out_path: Path,
    settings: Settings,
    config: Config,
    *,
    cache_path: Path,
    calib_samples: list[dict[str, np.ndarray]] | None = None,
    on_sample: Callable[[], None] | None = None,
) -> Path:
    """Write the INT8 model for ``config``; calibrates on first use of ``cache_path``."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    act, wt = settings.quant_types()
    try:
        with quiet():
            if settings.mode == "dynamic":
                quantize_dynamic(
                    str(prepared_path),
                    str(out_path),
                    op_types_to_quantize=["MatMul"],
                    per_channel=settings.per_channel,
                    weight_type=wt,
                    nodes_to_exclude=list(config.exclude),
                    nodes_to_quantize=config.only,
                    extra_options={"MatMulConstBOnly": True},
                )
            else:
                if not cache_path.exists():
                    if not calib_samples:
                        raise ConversionError("INT8 calibration needs samples")
                    proto_inputs = {
                        i.name for i in onnx.load(str(prepared_path), load_external_data=False).graph.input
                    }
                    searched = calibrate(
                        prepared_path, settings, _Reader(calib_samples, proto_inputs, on_sample), cache_path
                    )
                    if searched is not None:
                        scale_search.write_report(cache_path, searched)
                extra = settings.extra_options()
                nodes = config.only
                placement = None
                if settings.target == "trt":
                    nodes, placement, extra = _trt_nodes(prepared_path, config)
                    if not nodes:  # onnxruntime reads an empty list as "every node"
                        shutil.copyfile(prepared_path, out_path)
                        adaround.restore_file(out_path, prepared_path)  # FP32 weights of nodes left in float
                        return out_path
                quantize_static(
                    str(prepared_path),
                    str(out_path),
                    None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=config.op_types,
                    per_channel=settings.per_channel,
                    activation_type=act,
                    weight_type=wt,
                    nodes_to_exclude=list(config.exclude),
                    nodes_to_quantize=nodes,
                    calibrate_method=_method(settings.method),
                    extra_options=extra,
                    calibration_cache_path=str(cache_path),
                )
                if placement is not None:
                    from tensorsmith.precision import trt_placement

                    out = onnx.load(str(out_path))
                    trt_placement.finish(out, placement)
                    onnx.save(out, str(out_path))
                adaround.restore_file(out_path, prepared_path)  # FP32 weights of nodes left in float
    except ConversionError:
        raise
    except Exception as exc:
        bad = non_finite_ranges(cache_path)
        if bad:
            proto = onnx.load(str(prepared_path), load_external_data=False)
            order = {o: i for i, n in enumerate(proto.graph.node) for o in n.output}
            first = min(bad, key=lambda t: order.get(t, -1))
            raise UsageError(
                f"the model computes NaN/Inf on the calibration data (first at {first!r}, {len(bad)} tensor(s)): "
                "no int8 scale for them",
                hint="check the calibration data: values the model accepts (masks of 0/1, ids within the vocabulary)",
            ) from exc
        raise ConversionError(f"INT8 quantization failed: {type(exc).__name__}: {short(exc, 200)}") from exc
    return out_path


def calibrate(prepared_path: Path, settings: Settings, reader: _Reader, cache_path: Path) -> dict | None:
    """Collect the activation ranges with onnxruntime's calibrator and write its cache
    (``save_tensors_data``): the same file ``quantize_static`` reads back, but with the
    calibrator options ``quantize_static`` does not pass on (``Settings.calib_options``).
    ``mse``: onnxruntime's histograms, ranges searched by ``scale_search.mse_ranges``;
    returns what it chose (else None)."""
    import tempfile

    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData, create_calibrator, save_tensors_data

    with tempfile.TemporaryDirectory(prefix="tensorsmith-calib-") as tmp:
        # TensorRT placement reads ranges only around these ops: calibrating nothing else
        # keeps the entropy search (a Python loop per tensor) affordable
        ops = None
        if settings.target == "trt":
            from tensorsmith.precision import trt_placement

            ops = [*trt_placement.COMPUTE, *trt_placement.POOLS, "Add", "Concat"]
        calibrator = create_calibrator(
            Path(prepared_path),
            ops,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_method(settings.method, collect=True),
            extra_options=settings.calib_options(),
        )
        if settings.method == "mse":  # histograms merge across calls: hold 8 samples' activations, not all
            for i in range(0, len(reader.samples), 8):
                calibrator.collect_data(_Reader(reader.samples[i : i + 8], reader.names, reader.on_sample))
        else:
            calibrator.collect_data(reader)
        searched = None
        if settings.method == "mse":
            found, info = scale_search.mse_ranges(
                calibrator.collector.histogram_dict, symmetric=settings.target == "trt"
            )
            ranges = TensorsData(
                CalibrationMethod.MinMax,
                {k: (np.array(lo, np.float32), np.array(hi, np.float32)) for k, (lo, hi) in found.items()},
            )
            searched = info.describe()
        else:
            ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache_path)
    return searched


def _trt_nodes(prepared_path: Path, config: Config):
    """TensorRT placement (``trt_placement``): the nodes to quantize, the plan, and the
    quantizer options; ``config.exclude`` (--keep-fp32, the fallback) and ``config.only``
    narrow it."""
    from tensorsmith.precision import trt_placement

    proto = onnx.load(str(prepared_path))
    placement = trt_placement.plan(proto)
    nodes = [n for n in placement.nodes if n not in config.exclude]
    if config.only is not None:
        only = set(config.only)
        nodes = [n for n in nodes if n in only]
    placement.strip = [(n, i) for n, i in placement.strip if n in nodes]
    return nodes, placement, trt_placement.extra_options(proto)


# ---------------------------------------------------------------------------
# what the quantized model looks like


def non_finite_ranges(cache_path: Path) -> list[str]:
    """Tensors whose calibrated range (onnxruntime's calibration cache) is NaN or infinite."""

    try:
        data = json.loads(Path(cache_path).read_text()).get("data", {})
    except (OSError, ValueError, AttributeError):
        return []
    bad = []
    for name, entry in data.items():
        try:
            # minmax writes lists, the entropy/percentile calibrators plain numbers
            values = [float(v) for key in ("lowest", "highest") for v in np.atleast_1d(entry[key]["data"])]
        except (KeyError, TypeError, ValueError):
            continue
        if not np.isfinite(values).all():
            bad.append(name)
    return bad


QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "QLinearAdd",
    "QLinearMul",
    "MatMulNBits",
}


def already_quantized(proto: onnx.ModelProto) -> str:
    """Why ``proto`` already carries int8 (quantization nodes, or int weights cast to float), or ``""``."""
    ops = sorted({n.op_type for n in proto.graph.node if n.op_type in QUANTIZED_OPS})
    if ops:
        return f"it has {', '.join(ops)} nodes"
    int_weights = {
        t.name
        for t in proto.graph.initializer
        if t.data_type
        in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
    }
    casts = [
        n
        for n in proto.graph.node
        if n.op_type == "Cast"
        and n.input
        and n.input[0] in int_weights
        and any(
            a.name == "to" and a.i in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) for a in n.attribute
        )
    ]
    if casts:
        return f"{len(casts)} int8 weight(s) are cast to float at run time"
    return ""


def quantized_nodes(proto: onnx.ModelProto) -> set[str]:
    """Names of the compute nodes that read a DequantizeLinear output or were made integer ops."""
    dq_out = {o for n in proto.graph.node if n.op_type in ("DequantizeLinear",) for o in n.output}
    dyn = {"MatMulInteger", "DynamicQuantizeMatMul", "ConvInteger"}
    out = set()
    for n in proto.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast"):
            continue
        if n.op_type in dyn or any(i in dq_out for i in n.input):
            out.add(n.name.removesuffix("_quant"))
    return out


def zero_points(proto: onnx.ModelProto) -> list[tuple[str, np.ndarray]]:
    """(Q/DQ node, zero point values) for every Q/DQ node."""
    inits = {t.name: t for t in proto.graph.initializer}
    out = []
    for n in proto.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            if len(n.input) < 3 or not n.input[2]:
                out.append((n.name, np.zeros(1, np.int8)))
            elif n.input[2] in inits:
                out.append((n.name, numpy_helper.to_array(inits[n.input[2]])))
    return out


def file_bytes(path: str | os.PathLike) -> int:
    p = Path(path)
    total = p.stat().st_size
    for extra in p.parent.glob(p.name + ".data"):
        total += extra.stat().st_size
    return total
