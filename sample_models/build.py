#!/usr/bin/env python
"""Build the small sample models committed under ``sample_models/``.

Usage (from the repository root)::

    python sample_models/build.py                 # everything
    python sample_models/build.py --only onnx     # just the four .onnx files
    python sample_models/build.py --only torch    # frameworks/cnn_{torchscript.pt,export.pt2,state_dict.pth}
    python sample_models/build.py --only tf       # frameworks/cnn{.keras,.h5,_savedmodel/,_frozen.pb,.tflite}
    python sample_models/build.py --out /tmp/sm   # write somewhere else

All weights are random but deterministic (fixed seeds); every BatchNorm has
random running_mean/running_var/weight/bias so BN folding changes numbers.
The Keras CNN receives exactly the PyTorch CNN's weights, so every
``frameworks/cnn*`` file and ``cnn.onnx`` compute the same function (Keras/TF
files take NHWC input, everything else NCHW).  Each written file is reloaded
and checked numerically against the PyTorch module.

ONNX export notes (torch 2.13):

* We use the TorchScript exporter (``dynamo=False``) with
  ``training=TrainingMode.PRESERVE``.  In the default EVAL mode it runs an
  "eval peephole" pass that folds BatchNormalization into the preceding Conv;
  PRESERVE (with the module in eval mode) skips that pass, so BN stays a
  separate ``BatchNormalization`` node (training_mode=0, running stats as
  initializers) while ordinary constant folding still runs.
* Neither exporter keeps Dropout in eval mode.  We register a custom
  TorchScript symbolic for ``aten::dropout`` (only for the duration of the
  export) that emits an inference-mode ONNX ``Dropout(data, ratio)`` node with
  the ratio as a Constant input, i.e. the Dropout node is inserted at export
  time at exactly the place of each ``nn.Dropout``.
* The dynamo exporter (``dynamo=True``) is not used: with its default
  ``optimize=True`` it folds BN into Conv; it has no opset-17 implementations
  (exports opset 18 and the down-conversion to 17 fails on
  ReduceMean axes), and it writes a ``.onnx.data`` external-data file by
  default.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

OPSET = 17
SEED = 0
RTOL, ATOL = 1e-4, 1e-5

# name -> (factory in sample_models.torch_cnn, input name, output name,
#          example input shape, dynamic axes, op types that must be present)
ONNX_MODELS = {
    "cnn": dict(
        factory="build_cnn",
        input="input",
        output="logits",
        shape=(2, 3, 32, 32),
        axes={0: "batch"},
        out_axes={0: "batch"},
        required={"Conv", "BatchNormalization", "Relu", "MaxPool", "Dropout", "Gemm"},
    ),
    "resblock": dict(
        factory="build_resblock",
        input="input",
        output="logits",
        shape=(2, 3, 32, 32),
        axes={0: "batch"},
        out_axes={0: "batch"},
        required={"Conv", "BatchNormalization", "Relu", "Add", "Gemm"},
    ),
    "transformer": dict(
        factory="build_transformer",
        input="x",
        output="y",
        shape=(2, 7, 64),
        axes={0: "batch", 1: "seq"},
        out_axes={0: "batch", 1: "seq"},
        required={"LayerNormalization", "MatMul", "Add", "Softmax", "Erf", "Dropout"},
    ),
    "mobilenet_block": dict(
        factory="build_mobilenet_block",
        input="input",
        output="logits",
        shape=(2, 3, 64, 64),
        axes={0: "batch"},
        out_axes={0: "batch"},
        required={
            "Conv",
            "BatchNormalization",
            "HardSwish",
            "HardSigmoid",
            "Clip",
            "GlobalAveragePool",
            "Dropout",
        },
    ),
}

_written: list[tuple[Path, str]] = []


def _record(path: Path, note: str = "") -> None:
    _written.append((path, note))


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _check_close(name: str, got, ref) -> float:
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL, err_msg=name)
    return float(np.max(np.abs(got - ref)))


def _inputs(shape, seed: int = 123):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- ONNX
@contextlib.contextmanager
def _onnx_dropout_symbolic():
    """Make the TorchScript exporter emit ONNX Dropout (inference) for aten::dropout.

    In eval mode the stock symbolic returns the input unchanged, so Dropout
    disappears from the graph.  This emits ``Dropout(data, ratio)`` with the
    ratio as a float32 scalar Constant and no training_mode input (= False).
    """
    import torch
    from torch.onnx import symbolic_helper

    def dropout(g, data, p, train):
        ratio = float(symbolic_helper._maybe_get_const(p, "f"))
        ratio_c = g.op("Constant", value_t=torch.tensor(ratio, dtype=torch.float32))
        return g.op("Dropout", data, ratio_c)

    torch.onnx.register_custom_op_symbolic("aten::dropout", dropout, OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::dropout", OPSET)


def build_onnx(out: Path) -> None:
    import onnx
    import onnxruntime as ort
    import torch

    from sample_models import torch_cnn

    for name, spec in ONNX_MODELS.items():
        model = getattr(torch_cnn, spec["factory"])()
        path = out / f"{name}.onnx"
        example = torch.from_numpy(_inputs(spec["shape"]))
        with _onnx_dropout_symbolic(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                training=torch.onnx.TrainingMode.PRESERVE,  # keeps BatchNormalization unfolded
                do_constant_folding=True,
                input_names=[spec["input"]],
                output_names=[spec["output"]],
                dynamic_axes={spec["input"]: spec["axes"], spec["output"]: spec["out_axes"]},
            )
        # Re-save as one self-contained file and remove any stray external data.
        proto = onnx.load(str(path))
        proto.doc_string = f"tensorsmith sample model '{name}' (random weights, seed-deterministic)"
        for stray in out.glob(f"{name}.onnx.data"):
            stray.unlink()
        onnx.save(proto, str(path), save_as_external_data=False)
        assert not any(out.glob(f"{name}.onnx*.data")), "external data left behind"

        onnx.checker.check_model(proto, full_check=True)
        opsets = {o.domain: o.version for o in proto.opset_import}
        assert opsets.get("", opsets.get("ai.onnx")) == OPSET, opsets
        ops = Counter(n.op_type for n in proto.graph.node)
        missing = spec["required"] - set(ops)
        assert not missing, f"{name}.onnx lacks {missing}: {ops}"

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        diffs = []
        for batch in (1, 4):
            shape = (batch, *tuple(spec["shape"][1:]))
            if name == "transformer":
                shape = (batch, 3 + batch, spec["shape"][2])  # vary seq too
            x = _inputs(shape, seed=batch)
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            (got,) = sess.run(None, {spec["input"]: x})
            diffs.append(_check_close(f"{name}.onnx batch={batch}", got, ref))
        ops_str = ", ".join(f"{k}x{v}" if v > 1 else k for k, v in sorted(ops.items()))
        _record(path, f"opset {OPSET}; max|ort-torch|={max(diffs):.1e}; ops: {ops_str}")


# ---------------------------------------------------------------------------- torch
def build_torch(out: Path) -> None:
    import torch

    from sample_models.torch_cnn import build_cnn

    fw = out / "frameworks"
    fw.mkdir(parents=True, exist_ok=True)
    model = build_cnn(seed=SEED)
    x = torch.from_numpy(_inputs((3, 3, 32, 32)))
    with torch.no_grad():
        ref = model(x).numpy()

    # state dict (+ sample_models.torch_cnn:build_cnn)
    sd_path = fw / "cnn_state_dict.pth"
    torch.save(model.state_dict(), sd_path)
    fresh = build_cnn(seed=SEED + 99)  # different init, then load
    fresh.load_state_dict(torch.load(sd_path, weights_only=True))
    with torch.no_grad():
        d = _check_close("cnn_state_dict.pth", fresh(x).numpy(), ref)
    _record(sd_path, f"state_dict for sample_models.torch_cnn:build_cnn; max diff {d:.1e}")

    # TorchScript
    ts_path = fw / "cnn_torchscript.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scripted = torch.jit.script(model)
            kind = "torch.jit.script"
        except Exception:  # pragma: no cover - fall back to tracing
            scripted = torch.jit.trace(model, (x,))
            kind = "torch.jit.trace"
        scripted.save(str(ts_path))
        loaded = torch.jit.load(str(ts_path))
    with torch.no_grad():
        d = _check_close("cnn_torchscript.pt", loaded(x).numpy(), ref)
    _record(ts_path, f"{kind}, eval mode; max diff {d:.1e}")

    # torch.export ExportedProgram with dynamic batch
    ep_path = fw / "cnn_export.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, str(ep_path))
    ep2 = torch.export.load(str(ep_path))
    x1 = torch.from_numpy(_inputs((1, 3, 32, 32), seed=7))
    with torch.no_grad():
        d = _check_close("cnn_export.pt2 b3", ep2.module()(x).numpy(), ref)
        _check_close("cnn_export.pt2 b1", ep2.module()(x1).numpy(), model(x1).numpy())
    _record(ep_path, f"torch.export (dynamic batch 'batch' in [1,1024]); max diff {d:.1e}")


# ------------------------------------------------------------------------------- tf
def _torch_cnn_reference():
    """(numpy state dict, NCHW input, reference logits) of the PyTorch cnn, or None."""
    try:
        import torch

        from sample_models.torch_cnn import build_cnn
    except ImportError:
        return None
    model = build_cnn(seed=SEED)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    x = _inputs((3, 3, 32, 32))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return sd, x, ref


def build_tf(out: Path) -> None:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from sample_models.tf_cnn import build_keras_cnn

    fw = out / "frameworks"
    fw.mkdir(parents=True, exist_ok=True)

    torch_ref = _torch_cnn_reference()
    if torch_ref is not None:
        sd, x_nchw, _ = torch_ref
        model = build_keras_cnn(seed=SEED, weights=sd)
        x = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
        ref = model(x, training=False).numpy()
        d = _check_close("keras vs torch", ref, torch_ref[2])
        print(f"keras cnn == torch cnn (NHWC vs NCHW): max diff {d:.1e}")
        origin = "weights copied from torch cnn"
    else:
        print("WARNING: torch not importable; Keras CNN gets its own random weights")
        model = build_keras_cnn(seed=SEED)
        x = _inputs((3, 32, 32, 3))
        ref = model(x, training=False).numpy()
        origin = "keras-native random weights"

    import keras

    # Keras 3 native format
    p = fw / "cnn.keras"
    model.save(p)
    d = _check_close("cnn.keras", keras.models.load_model(p)(x, training=False).numpy(), ref)
    _record(p, f"Keras 3 format, {origin}; max diff {d:.1e}")

    # legacy HDF5
    p = fw / "cnn.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(p)
        d = _check_close("cnn.h5", keras.models.load_model(p)(x, training=False).numpy(), ref)
    _record(p, f"legacy HDF5; max diff {d:.1e}")

    # SavedModel (serving_default)
    p = fw / "cnn_savedmodel"
    if p.exists():
        shutil.rmtree(p)
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(p), verbose=False)
    sm = tf.saved_model.load(str(p))
    serve = sm.signatures["serving_default"]
    (sig_out,) = serve(tf.constant(x)).values()
    d = _check_close("cnn_savedmodel", sig_out.numpy(), ref)
    in_spec = serve.structured_input_signature[1]
    _record(
        p,
        f"SavedModel dir, serving_default inputs {list(in_spec)} "
        f"outputs {list(serve.structured_outputs)}; max diff {d:.1e}",
    )

    # Frozen GraphDef (Placeholder input "input", output "logits"/"Identity").
    # Note: Keras 3 lowers BatchNormalization to Rsqrt/Mul/Sub/AddV2 here, not
    # FusedBatchNormV3, and Dropout (training=False) disappears.
    p = fw / "cnn_frozen.pb"

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="input")])
    def infer(inp):
        return tf.identity(model(inp, training=False), name="logits")

    frozen = convert_variables_to_constants_v2(infer.get_concrete_function())
    gdef = frozen.graph.as_graph_def()
    p.write_bytes(gdef.SerializeToString(deterministic=True))  # stable bytes
    placeholders = [n.name for n in gdef.node if n.op == "Placeholder"]
    assert placeholders == ["input"], placeholders
    assert not any(n.op in ("VarHandleOp", "ReadVariableOp") for n in gdef.node)
    g = tf.Graph()
    with g.as_default():
        tf.graph_util.import_graph_def(gdef, name="")
    with tf.compat.v1.Session(graph=g) as s:
        got = s.run("logits:0", {"input:0": x})
    d = _check_close("cnn_frozen.pb", got, ref)
    _record(p, f"frozen GraphDef, Placeholder 'input:0' -> 'logits:0' (also 'Identity:0'); max diff {d:.1e}")

    # TFLite float32
    p = fw / "cnn.tflite"
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = []
    with contextlib.redirect_stdout(io.StringIO()):  # silence the temp-SavedModel endpoint dump
        p.write_bytes(conv.convert())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter deprecation notice
        interp = tf.lite.Interpreter(model_path=str(p))
    in_det = interp.get_input_details()[0]
    interp.resize_tensor_input(in_det["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(in_det["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    d = _check_close("cnn.tflite", got, ref)
    _record(
        p,
        f"TFLite float32, input shape_signature {[int(v) for v in in_det['shape_signature']]}; max diff {d:.1e}",
    )


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output directory (default: %(default)s)")
    ap.add_argument("--only", choices=["onnx", "torch", "tf"], help="build only one group")
    args = ap.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    if args.only in (None, "onnx"):
        build_onnx(out)
    if args.only in (None, "torch"):
        build_torch(out)
    if args.only in (None, "tf"):
        build_tf(out)

    print("\nWritten:")
    total = 0
    for path, note in _written:
        size = _size(path)
        total += size
        rel = path.relative_to(out) if path.is_relative_to(out) else path
        print(f"  {str(rel) + ('/' if path.is_dir() else ''):32s} {size / 1024:8.1f} KiB  {note}")
    print(f"  {'total':32s} {total / 1024:8.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
