"""Test helpers: models written as ONNX text, run and compared in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_ir as ir
import onnxruntime as ort

from tensorsmith import passes as passes_mod
from tensorsmith.passes.manager import PassManager


def parse(text: str, initializers: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """ONNX text -> ModelProto (ir_version 8 so any onnxruntime loads it)."""
    proto = onnx.parser.parse_model(text)
    for name, arr in (initializers or {}).items():
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(arr), name))
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def to_ir(proto: onnx.ModelProto) -> ir.Model:
    return ir.serde.deserialize_model(proto)


def to_proto(model: ir.Model) -> onnx.ModelProto:
    return ir.serde.serialize_model(model)


def run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def apply(proto: onnx.ModelProto, *names: str, options: dict | None = None):
    """Run the named passes once each (no fixed point). Returns (new proto, passes)."""
    model = to_ir(proto)
    ps = passes_mod.create(list(names), options)
    results = [p(model) for p in ps]
    out = to_proto(model)
    return out, ps, any(r.modified for r in results)


def apply_to_fixed_point(proto: onnx.ModelProto, *names: str):
    model = to_ir(proto)
    records = PassManager(passes_mod.create(list(names))).run(model)
    return to_proto(model), records


def ops(proto: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


def assert_same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, feeds, rtol=1e-5, atol=1e-6):
    ra, rb = run(a, feeds), run(b, feeds)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb, strict=False):
        assert x.shape == y.shape
        assert x.dtype == y.dtype
        scale = float(np.max(np.abs(x))) if x.size else 0.0
        np.testing.assert_allclose(y, x, rtol=0, atol=atol + rtol * scale)


def assert_interface_kept(a: onnx.ModelProto, b: onnx.ModelProto):
    """Graph input/output names, dtypes and declared shapes are unchanged."""

    def sig(vs):
        return [(v.name, v.type.SerializeToString()) for v in vs]

    inits_a = {i.name for i in a.graph.initializer}
    inits_b = {i.name for i in b.graph.initializer}
    assert sig([v for v in a.graph.input if v.name not in inits_a]) == sig(
        [v for v in b.graph.input if v.name not in inits_b]
    )
    assert sig(a.graph.output) == sig(b.graph.output)


def check_idempotent(proto: onnx.ModelProto, name: str) -> None:
    once, _, _ = apply(proto, name)
    _, _, modified = apply(once, name)
    assert not modified, f"second run of {name} reported a change"


def optimize_thirdparty(name: str, tmp_path):
    """Fetch third-party model ``name`` (skip when offline), optimize it with verification on
    seeded inputs from the table's hints, and check the verification passed.

    Returns ``(source path, output path, JobReport, feeds)``.
    """
    import pytest
    import thirdparty

    import tensorsmith

    try:
        src = thirdparty.fetch(name)
    except thirdparty.ThirdPartyUnavailable as exc:
        pytest.skip(f"third-party model unavailable (offline?): {exc}")
    feeds = thirdparty.random_feeds(name, src, seed=0)
    data = tmp_path / "verify.npz"
    np.savez(data, **feeds)
    out = tmp_path / "out.onnx"
    report = tensorsmith.optimize_file(src, out, verify_data=data)
    assert report.verification.passed, report.verification.to_dict()
    return src, out, report, feeds
