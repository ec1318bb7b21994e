"""The command-line flags, one line each, and how a command's flags become a ``JobConfig``.

``FLAGS`` maps a parameter name to its type and ``typer.Option``; a parameter is
named after its recipe key (``tensorsmith.config``): ``from_`` is ``from``,
``no_verify``/``no_optimize`` are ``verify: false``/``optimize: false``. The
``optimize`` and ``convert`` commands get their parameters from this table
(``signature``), grouped in ``--help`` by ``rich_help_panel``: a new flag is one
entry here (``lint`` and ``build`` pick theirs by name).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import typer

from tensorsmith.errors import UsageError

SOURCE = "Source"
PASSES = "Graph passes"
VERIFY = "Verification"
PRECISION = "Precision (FP16/INT8)"
TRT = "TensorRT and TF-TRT"
OUTPUT = "Output"

Flag = tuple[Any, Any]  # (annotation, typer.Option)

FLAGS: dict[str, Flag] = {
    # source
    "from_": (
        str | None,
        typer.Option(
            None, "--from", help="Force the source format (default: detected).", rich_help_panel=SOURCE
        ),
    ),
    "input_shape": (
        list[str] | None,
        typer.Option(
            None,
            "--input-shape",
            help="NAME=1x3x224x224 for verification inputs (repeatable).",
            rich_help_panel=SOURCE,
        ),
    ),
    "opset": (
        int | None,
        typer.Option(None, "--opset", help="ONNX opset to write (default 18).", rich_help_panel=SOURCE),
    ),
    "static": (
        bool,
        typer.Option(
            False,
            "--static",
            help="Fix every dimension (default: the batch dim is dynamic).",
            rich_help_panel=SOURCE,
        ),
    ),
    "input_value": (
        list[str] | None,
        typer.Option(
            None,
            "--input-value",
            help="NAME=VALUE: bind a non-tensor forward argument as a constant (PyTorch).",
            rich_help_panel=SOURCE,
        ),
    ),
    "signature": (
        str | None,
        typer.Option(
            None,
            "--signature",
            help="SavedModel signature (default serving_default).",
            rich_help_panel=SOURCE,
        ),
    ),
    "inputs": (
        list[str] | None,
        typer.Option(
            None, "--inputs", help="GraphDef input tensors (default: Placeholders).", rich_help_panel=SOURCE
        ),
    ),
    "outputs": (
        list[str] | None,
        typer.Option(
            None,
            "--outputs",
            help="GraphDef output tensors (default: nodes nothing consumes).",
            rich_help_panel=SOURCE,
        ),
    ),
    "nchw_inputs": (
        bool,
        typer.Option(
            False, "--nchw-inputs", help="TensorFlow: make 4-D NHWC inputs NCHW.", rich_help_panel=SOURCE
        ),
    ),
    "weights": (
        Path | None,
        typer.Option(
            None,
            "--weights",
            help="state_dict for a module:factory source (loaded with weights_only=True).",
            rich_help_panel=SOURCE,
        ),
    ),
    "weights_key": (
        str | None,
        typer.Option(
            None,
            "--weights-key",
            help="Where the state dict sits in a --weights checkpoint dict (dotted for nesting: ema.model).",
            rich_help_panel=SOURCE,
        ),
    ),
    "weights_non_strict": (
        bool,
        typer.Option(
            False,
            "--weights-non-strict",
            help="Load the --weights entries that fit; list missing and unexpected keys in the report.",
            rich_help_panel=SOURCE,
        ),
    ),
    "trust_remote_code": (
        bool,
        typer.Option(
            False,
            "--trust-remote-code",
            help="Allow full unpickling of --weights / .pt2 payloads that weights_only refuses (runs arbitrary code).",
            rich_help_panel=SOURCE,
        ),
    ),
    # passes
    "passes": (
        list[str] | None,
        typer.Option(
            None,
            "--passes",
            help="Comma-separated passes to run (default: all, see `tensorsmith passes`).",
            rich_help_panel=PASSES,
        ),
    ),
    "skip": (
        list[str] | None,
        typer.Option(
            None, "--skip", help="Pass to leave out (repeatable or comma-separated).", rich_help_panel=PASSES
        ),
    ),
    "no_optimize": (
        bool,
        typer.Option(
            False,
            "--no-optimize",
            help="Skip the graph passes (convert and verify only).",
            rich_help_panel=PASSES,
        ),
    ),
    "fold_dequantize": (
        bool,
        typer.Option(
            False,
            "--fold-dequantize",
            help="Fold Cast(int8 weight) * scale chains (faster with ORT optimizations off; file up to 4x).",
            rich_help_panel=PASSES,
        ),
    ),
    "max_iterations": (
        int | None,
        typer.Option(
            None,
            "--max-iterations",
            min=1,
            help="Cap on pass-manager iterations (default 8).",
            rich_help_panel=PASSES,
        ),
    ),
    "explain": (
        bool,
        typer.Option(
            False, "--explain", help="Say why passes left candidates alone.", rich_help_panel=PASSES
        ),
    ),
    # verification
    "no_verify": (
        bool,
        typer.Option(
            False, "--no-verify", help="Skip the numeric check against the source.", rich_help_panel=VERIFY
        ),
    ),
    "verify_data": (
        Path | None,
        typer.Option(
            None,
            "--verify-data",
            help=".npz of real inputs (arrays named after the inputs).",
            rich_help_panel=VERIFY,
        ),
    ),
    "rtol": (
        float | None,
        typer.Option(
            None,
            "--rtol",
            help="Relative tolerance, of each output's scale (default 1e-4).",
            rich_help_panel=VERIFY,
        ),
    ),
    "atol": (
        float | None,
        typer.Option(None, "--atol", help="Absolute tolerance (default 1e-5).", rich_help_panel=VERIFY),
    ),
    # precision (README, "Precision: FP16 and INT8")
    "precision": (
        str | None,
        typer.Option(
            None,
            "--precision",
            help="fp32 (default), fp16 or int8: lower the precision in the graph.",
            rich_help_panel=PRECISION,
        ),
    ),
    "target": (
        str | None,
        typer.Option(
            None,
            "--target",
            help="Who runs the lowered model: ort (onnxruntime CPU, default) or trt.",
            rich_help_panel=PRECISION,
        ),
    ),
    "fp16_io": (
        bool,
        typer.Option(
            False,
            "--fp16-io",
            help="FP16: make inputs/outputs float16 too (default: kept FP32).",
            rich_help_panel=PRECISION,
        ),
    ),
    "calib": (
        str | None,
        typer.Option(
            None,
            "--calib",
            help="INT8 calibration data: .npz, folder of .npz/.npy/images, or 'random'.",
            rich_help_panel=PRECISION,
        ),
    ),
    "calib_preprocess": (
        str | None,
        typer.Option(
            None,
            "--calib-preprocess",
            help='Images: "resize=224,mean=..,..,..,std=..,..,..,layout=NCHW".',
            rich_help_panel=PRECISION,
        ),
    ),
    "calib_loader": (
        str | None,
        typer.Option(
            None,
            "--calib-loader",
            help="module:function returning samples (runs your code).",
            rich_help_panel=PRECISION,
        ),
    ),
    "calib_samples": (
        int | None,
        typer.Option(
            None,
            "--calib-samples",
            help="Calibration samples to use (default 100).",
            rich_help_panel=PRECISION,
        ),
    ),
    "calib_method": (
        str | None,
        typer.Option(
            None,
            "--calib-method",
            help="minmax (default), entropy, percentile or mse.",
            rich_help_panel=PRECISION,
        ),
    ),
    "val": (
        str | None,
        typer.Option(
            None,
            "--val",
            help="Validation data for the accuracy gate (default: held back from --calib).",
            rich_help_panel=PRECISION,
        ),
    ),
    "int8_mode": (
        str | None,
        typer.Option(
            None,
            "--int8-mode",
            help="static (Q/DQ, default) or dynamic (MatMul only).",
            rich_help_panel=PRECISION,
        ),
    ),
    "min_cosine": (
        float | None,
        typer.Option(
            None,
            "--min-cosine",
            help="Gate: minimum cosine per output (fp16 0.999, int8 0.99).",
            rich_help_panel=PRECISION,
        ),
    ),
    "min_top1": (
        float | None,
        typer.Option(
            None,
            "--min-top1",
            help="Gate: minimum top-1 agreement, 0-1 (int8 0.99).",
            rich_help_panel=PRECISION,
        ),
    ),
    "max_abs_error": (
        float | None,
        typer.Option(
            None,
            "--max-abs-error",
            help="Gate: maximum absolute error per output (default: none).",
            rich_help_panel=PRECISION,
        ),
    ),
    "max_rel_error": (
        float | None,
        typer.Option(
            None,
            "--max-rel-error",
            help="Gate: maximum error relative to the output's scale.",
            rich_help_panel=PRECISION,
        ),
    ),
    "fallback_budget": (
        int | None,
        typer.Option(
            None,
            "--fallback-budget",
            help="Most nodes the fallback may keep in FP32 (default 10).",
            rich_help_panel=PRECISION,
        ),
    ),
    "min_speedup": (
        float | None,
        typer.Option(
            None,
            "--min-speedup",
            help="INT8 on ort: fail unless this much faster than FP32 (default 1.0).",
            rich_help_panel=PRECISION,
        ),
    ),
    "keep_fp32": (
        list[str] | None,
        typer.Option(
            None,
            "--keep-fp32",
            help="Node name or op type to keep FP32 (repeatable or comma-separated).",
            rich_help_panel=PRECISION,
        ),
    ),
    "int8_steps": (
        list[str] | None,
        typer.Option(
            None,
            "--int8-steps",
            help="INT8 accuracy steps before quantizing (comma-separated): equalize, smooth, mse-weights, adaround, bias-correction.",
            rich_help_panel=PRECISION,
        ),
    ),
    "precision_report": (
        bool,
        typer.Option(
            False,
            "--precision-report",
            help="INT8: rank every quantized layer by sensitivity (output error alone in INT8) and print it with its final precision.",
            rich_help_panel=PRECISION,
        ),
    ),
    # TensorRT / TF-TRT (convert --to trt|tftrt, build, lint)
    "shapes": (
        list[str] | None,
        typer.Option(
            None,
            "--shapes",
            help="TensorRT/TF-TRT profile NAME=MIN:OPT:MAX, e.g. x=1x3x224x224:8x3x224x224:32x3x224x224 (repeatable).",
            rich_help_panel=TRT,
        ),
    ),
    "max_batch": (
        int | None,
        typer.Option(
            None,
            "--max-batch",
            min=1,
            help="Default profile for a dynamic batch axis: 1:1:N (default 8).",
            rich_help_panel=TRT,
        ),
    ),
    "workspace": (
        str | None,
        typer.Option(
            None, "--workspace", help="TensorRT workspace memory pool limit, e.g. 4G.", rich_help_panel=TRT
        ),
    ),
    "timing_cache": (
        Path | None,
        typer.Option(
            None,
            "--timing-cache",
            help="TensorRT timing cache: read, then written back (shared across builds).",
            rich_help_panel=TRT,
        ),
    ),
    "builder_opt_level": (
        int | None,
        typer.Option(
            None,
            "--builder-opt-level",
            min=0,
            max=5,
            help="TensorRT builder optimization level 0-5.",
            rich_help_panel=TRT,
        ),
    ),
    "hardware_compat": (
        str | None,
        typer.Option(
            None,
            "--hardware-compat",
            help="TensorRT hardware compatibility: ampere_plus, same_compute_capability or none.",
            rich_help_panel=TRT,
        ),
    ),
    "version_compat": (
        bool,
        typer.Option(
            False, "--version-compat", help="Build a version-compatible TensorRT engine.", rich_help_panel=TRT
        ),
    ),
    "trt_version": (
        str | None,
        typer.Option(
            None,
            "--trt-version",
            help="TensorRT version the lint checks for: 10.x, 10.8, 11.x (default: installed, else 10.x).",
            rich_help_panel=TRT,
        ),
    ),
    "prepare_only": (
        bool,
        typer.Option(
            False,
            "--prepare-only",
            help="--to trt: write the ready-to-build ONNX and lint report; build nothing.",
            rich_help_panel=TRT,
        ),
    ),
    "profile_strategy": (
        str | None,
        typer.Option(
            None,
            "--profile-strategy",
            help="--to tftrt: Range, Optimal (default) or Range+Optimal.",
            rich_help_panel=TRT,
        ),
    ),
    # output
    "to": (
        str | None,
        typer.Option(None, "--to", help="Target format (default onnx).", rich_help_panel=OUTPUT),
    ),
    "output": (
        Path,
        typer.Option(
            ...,
            "-o",
            "--output",
            help="Where to write the result (written atomically).",
            rich_help_panel=OUTPUT,
        ),
    ),
    "external_data": (
        bool | None,
        typer.Option(
            None,
            "--external-data/--no-external-data",
            help="Weights in OUT.onnx.data beside the model (default: only when over 2 GB).",
            rich_help_panel=OUTPUT,
        ),
    ),
    "json_out": (
        bool,
        typer.Option(
            False, "--json", help="Print one JSON object on stdout instead of tables.", rich_help_panel=OUTPUT
        ),
    ),
    "report_html": (
        Path | None,
        typer.Option(
            None,
            "--report-html",
            help="Also write a self-contained HTML report to PATH (written even when the job fails).",
            rich_help_panel=OUTPUT,
        ),
    ),
    "dump_recipe": (
        bool,
        typer.Option(
            False,
            "--dump-recipe",
            help="Print this command as a recipe (YAML for `tensorsmith run`) and exit.",
            rich_help_panel=OUTPUT,
        ),
    ),
}

# parameters that only change what is printed, not what is made
DISPLAY = {"json_out", "explain", "dump_recipe", "report_html"}
# parameter -> recipe key, where they differ; `no_X` flags are `X: false`
PARAM_KEYS = {"from_": "from", "no_verify": "verify", "no_optimize": "optimize"}

# `convert` takes every flag; `optimize` (an ONNX source, ONNX out) all but the source's
# (other than --input-shape), TensorRT's, --to and --no-optimize
CONVERT_ONLY = {"to", "no_optimize"} | {
    k for k, (_, opt) in FLAGS.items() if opt.rich_help_panel in (SOURCE, TRT) and k != "input_shape"
}
OPTIMIZE_FLAGS = tuple(k for k in FLAGS if k not in CONVERT_ONLY)
CONVERT_FLAGS = tuple(FLAGS)


def signature(argument: tuple[str, Any, Any], names: tuple[str, ...]) -> inspect.Signature:
    """A command's signature: its argument ``(name, annotation, typer.Argument)``, then ``FLAGS[names]``."""
    name, annotation, default = argument
    params = [
        inspect.Parameter(
            name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation
        )
    ]
    for n in names:
        ann, opt = FLAGS[n]
        params.append(inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))
    return inspect.Signature(params)


def job_options(params: dict[str, Any]) -> dict[str, Any]:
    """A command's parameters -> the options it sets (recipe keys; defaults left out)."""
    options: dict[str, Any] = {}
    for name, value in params.items():
        if name in DISPLAY or name in ("input_path", "output"):
            continue
        key = PARAM_KEYS.get(name, name)
        if name.startswith("no_"):
            value = False if value else None
        elif value is False and key != "external_data":
            value = None
        elif isinstance(value, os.PathLike):
            value = str(value)
        elif isinstance(value, (list, tuple)):
            value = [str(v) for v in value] or None
        if value is not None:
            options[key] = value
    return options


def job_config(params: dict[str, Any]):
    """``JobConfig`` of a command's parameters; a bad value is a ``UsageError`` naming its flag."""
    from pydantic import ValidationError

    from tensorsmith.config import STAGES, JobConfig
    from tensorsmith.recipes.schema import flag_of

    try:
        return JobConfig.from_options(job_options(params))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = err["loc"]
        key = str(loc[1] if len(loc) > 1 and loc[0] in STAGES else loc[0])
        msg = err["msg"].removeprefix("Value error, ")
        raise UsageError(f"{flag_of(key) or key}: {msg}") from None
