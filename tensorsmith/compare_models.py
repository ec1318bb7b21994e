"""``tensorsmith compare A B``: run any two models the tool can run on the same inputs.

As Polygraphy's ``run --onnxrt --trt``: each side becomes a runner (onnxruntime for
ONNX, the source framework for a TensorFlow or PyTorch file, a TensorRT engine for a
``.plan``), both run the same seeded inputs (or ``--data FILE.npz``), and every output
is compared under one tolerance (``tensorsmith.compare``). When B is an ONNX model and
an output is over the tolerance, B's noise floor is measured (onnxruntime with and
without graph optimizations) and reported beside it: a difference within it is
numeric noise, not a conversion bug.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from tensorsmith.compare import OutputCheck, judge_by_noise, run_and_compare
from tensorsmith.errors import ConversionError, UsageError, short
from tensorsmith.runners import FunctionRunner, OnnxRuntimeRunner, Runner
from tensorsmith.shapes import InputSpec, resolve_shapes
from tensorsmith.tolerances import Tolerance


@dataclass
class Side:
    """One model to compare: its runner, its input specs and its output names."""

    path: str
    format: str
    runner: Runner
    specs: list[InputSpec]
    outputs: list[str]
    onnx_path: Path | None = None  # where onnxruntime runs it (ONNX sources): the noise floor


@dataclass
class CompareReport:
    a: str
    b: str
    formats: tuple[str, str]
    outputs: list[OutputCheck]
    samples: int
    input_source: str
    input_shapes: dict[str, list[int]]
    tolerance: Tolerance
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict:
        return {
            "status": "ok" if self.passed else "differ",
            "a": self.a,
            "b": self.b,
            "formats": list(self.formats),
            "passed": self.passed,
            "samples": self.samples,
            "input_source": self.input_source,
            "input_shapes": self.input_shapes,
            "rtol": self.tolerance.rtol,
            "atol": self.tolerance.atol,
            "outputs": [o.to_dict() for o in self.outputs],
            "notes": self.notes,
        }

    def render(self, console) -> None:
        from rich.table import Table

        table = Table(title=f"{self.a} ({self.formats[0]}) vs {self.b} ({self.formats[1]})")
        for col in ("output", "shape", "max abs diff", "of scale", "tolerance", "noise floor", "result"):
            table.add_column(col, justify="left" if col in ("output", "result") else "right")
        for o in self.outputs:
            tol = self.tolerance.atol + self.tolerance.rtol * o.scale
            table.add_row(
                o.name,
                "x".join(map(str, o.shape)),
                f"{o.max_abs_diff:.3g}",
                f"{o.max_rel_diff:.2g}",
                f"{tol:.3g}",
                "-" if o.noise_floor is None else f"{o.noise_floor:.3g}",
                "[green]pass[/]" if o.passed else f"[red]DIFFER[/] {o.reason}",
            )
        console.print(table)
        shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in self.input_shapes.items())
        console.print(f"  inputs: {self.samples} sample(s) from {self.input_source} ({shapes})")
        for note in self.notes:
            console.print(f"  note: {note}")


def _interface(path: Path) -> tuple[list[InputSpec], list[str]]:
    """An ONNX file's input specs and output names."""
    from tensorsmith import model_io
    from tensorsmith.verify import input_specs_from_proto

    proto = model_io.load_proto(path)
    return input_specs_from_proto(proto), [o.name for o in proto.graph.output]


def _onnx_side(path: Path) -> Side:
    specs, outputs = _interface(path)
    return Side(str(path), "onnx", OnnxRuntimeRunner(path), specs, outputs, onnx_path=path)


def _engine_side(path: Path) -> Side:
    from tensorsmith.convert.trt.api import import_tensorrt
    from tensorsmith.convert.trt.runner import EngineRunner

    trt = import_tensorrt()
    runner = EngineRunner(trt, path.read_bytes())
    runner.activate()
    engine = runner.engine
    specs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            dims = [d if d >= 0 else "?" for d in engine.get_tensor_shape(name)]
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            specs.append(InputSpec(name, dtype, dims))
        else:
            outputs.append(name)
    return Side(str(path), "tensorrt", runner, specs, outputs)


def _framework_side(path: str, fmt: str, work: Path, stack: ExitStack, *, trust_remote_code: bool) -> Side:
    """A TensorFlow/PyTorch source: the frontend loads it (and converts it, to learn its
    inputs and outputs); the comparison runs the framework itself."""
    from tensorsmith.convert import get_frontend
    from tensorsmith.convert.frontend import FrontendOptions

    frontend = get_frontend(fmt)
    work.mkdir(parents=True, exist_ok=True)
    opts = FrontendOptions(format=fmt, work_dir=work, trust_remote_code=trust_remote_code)
    imported = frontend.load(path, opts)
    stack.callback(imported.close)
    specs, outputs = _interface(imported.onnx_path)
    return Side(path, fmt, FunctionRunner(imported.run_source, fmt), specs, outputs)


def open_side(path: str, fmt: str | None, work: Path, stack: ExitStack, *, trust_remote_code: bool) -> Side:
    from tensorsmith.convert import detect_format

    p = Path(path)
    if fmt is None and p.suffix in (".plan", ".engine"):
        fmt = "tensorrt"
    fmt = fmt or detect_format(path)
    if fmt == "tensorrt":
        return _engine_side(p)
    if fmt == "onnx":
        return _onnx_side(p)
    return _framework_side(path, fmt, work, stack, trust_remote_code=trust_remote_code)


class _Renamed(Runner):
    """B's runner seen through A's names (inputs and outputs matched by position)."""

    def __init__(self, inner: Runner, inputs: dict[str, str], outputs: dict[str, str]):
        super().__init__()
        self.inner, self.inputs, self.outputs = inner, inputs, outputs
        self.name = inner.name

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _infer(self, feeds):
        got = self.inner.infer({self.inputs.get(k, k): v for k, v in feeds.items()})
        return {self.outputs.get(k, k): v for k, v in got.items()}


def _match(a: list[str], b: list[str], what: str) -> dict[str, str]:
    """B's name -> A's name: by name where they agree, else by position."""
    if set(a) == set(b):
        return {}
    if len(a) != len(b):
        raise UsageError(f"the models have different {what}: A {', '.join(a)}; B {', '.join(b)}")
    return dict(zip(b, a, strict=True))


def compare_models(
    a: str | os.PathLike,
    b: str | os.PathLike,
    *,
    a_format: str | None = None,
    b_format: str | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    data: str | os.PathLike | None = None,
    tolerance: Tolerance | None = None,
    trust_remote_code: bool = False,
    noise: bool = True,
) -> CompareReport:
    """Run A (the reference) and B on the same inputs; per-output differences."""
    from tensorsmith.verify import SEED, load_verify_data, random_inputs

    tol = tolerance or Tolerance()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tensorsmith-compare-") as tmp:
        side_a = open_side(str(a), a_format, Path(tmp) / "a", stack, trust_remote_code=trust_remote_code)
        side_b = open_side(str(b), b_format, Path(tmp) / "b", stack, trust_remote_code=trust_remote_code)
        in_map = _match([s.name for s in side_a.specs], [s.name for s in side_b.specs], "inputs")
        out_map = _match(side_a.outputs, side_b.outputs, "outputs")
        notes: list[str] = []
        # B seen through A's names (candidate and its noise-floor runner alike)
        wrap: Callable[[Runner], Runner] | None = None
        if in_map or out_map:
            notes.append("inputs/outputs matched by position (their names differ)")
            wrap = partial(_Renamed, inputs={v: k for k, v in in_map.items()}, outputs=out_map)
        candidate = wrap(side_b.runner) if wrap is not None else side_b.runner
        if data is not None:
            samples = load_verify_data(data, side_a.specs)
            source = str(data)
            shapes = {k: list(v.shape) for k, v in samples[0].items()}
        else:
            shapes, shape_notes = resolve_shapes(side_a.specs, input_shapes)
            notes.extend(shape_notes)
            samples = [random_inputs(side_a.specs, shapes, seed=SEED)]
            source = f"random (seed {SEED})"

        def failed(which: str, path: str):
            def _error(i: int, _feeds, exc: Exception) -> Exception:
                return ConversionError(f"{which} ({path}) fails on sample {i}: {short(exc, 200)}")

            return _error

        comparison = run_and_compare(
            side_a.runner,
            candidate,
            samples,
            tol,
            reference_error=failed("A", side_a.path),
            candidate_error=failed("B", side_b.path),
            align_int_dtypes=side_b.format == "tensorrt",
        )
        if noise and side_b.onnx_path is not None:
            notes.extend(judge_by_noise(comparison, side_b.onnx_path, samples, tol, wrap=wrap))
        return CompareReport(
            str(a),
            str(b),
            (side_a.format, side_b.format),
            comparison.outputs,
            len(samples),
            source,
            shapes,
            tol,
            notes,
        )
