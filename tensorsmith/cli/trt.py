"""``tensorsmith lint``, ``build`` and ``doctor`` (README, "TensorRT and TF-TRT")."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from tensorsmith.cli.app import app, print_json, progress, run_command
from tensorsmith.cli.options import FLAGS


@app.command()
def lint(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="ONNX model to check."),
    target: str = typer.Option("trt", "--for", help="Deployment target to check for (trt)."),
    trt_version: str | None = FLAGS["trt_version"][1],
    shapes: list[str] | None = FLAGS["shapes"][1],
    max_batch: int | None = FLAGS["max_batch"][1],
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="fp32, fp16 or int8: the precision the engine will run at (default: the graph's).",
    ),
    json_out: bool = FLAGS["json_out"][1],
) -> None:
    """Check an ONNX model for TensorRT without a GPU or TensorRT. Exit 0 clean, 1 findings."""

    def job() -> int:
        from tensorsmith.convert.trt.profiles import DEFAULT_MAX_BATCH
        from tensorsmith.lint import lint_file, render

        options = {"shapes": shapes, "max_batch": max_batch or DEFAULT_MAX_BATCH, "precision": precision}
        if trt_version is not None:
            options["trt_version"] = trt_version
        report = lint_file(model, target=target, **options)
        if json_out:
            print_json(report.to_dict())
        else:
            render(report, Console(highlight=False))
        return 0 if report.clean else 1

    run_command(job, json_mode=json_out)


@app.command()
def build(
    model: Path = typer.Argument(
        ..., metavar="MODEL.onnx", help="Ready-to-build ONNX (from convert --to trt --prepare-only)."
    ),
    to: str = typer.Option("trt", "--to", help="Target: trt."),
    output: Path = FLAGS["output"][1],
    shapes: list[str] | None = FLAGS["shapes"][1],
    max_batch: int | None = FLAGS["max_batch"][1],
    workspace: str | None = FLAGS["workspace"][1],
    timing_cache: Path | None = FLAGS["timing_cache"][1],
    builder_opt_level: int | None = FLAGS["builder_opt_level"][1],
    hardware_compat: str | None = FLAGS["hardware_compat"][1],
    version_compat: bool = FLAGS["version_compat"][1],
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="fp32, fp16 or int8 (default: what the graph carries). TensorRT 10 can build an FP32 graph "
        "with the FP16 flag; TensorRT 11 needs the precision in the graph.",
    ),
    no_verify: bool = FLAGS["no_verify"][1],
    verify_data: Path | None = FLAGS["verify_data"][1],
    rtol: float | None = typer.Option(None, "--rtol", help="Relative tolerance (default: by precision)."),
    atol: float | None = typer.Option(None, "--atol", help="Absolute tolerance (default: by precision)."),
    json_out: bool = FLAGS["json_out"][1],
    report_html: Path | None = FLAGS["report_html"][1],
) -> None:
    """Build a TensorRT engine from an ONNX model on this GPU machine, verify it, write .plan + .plan.json."""

    def job() -> int:
        from tensorsmith import jobs
        from tensorsmith.convert.targets import get_target
        from tensorsmith.convert.targets import trt as trt_target
        from tensorsmith.errors import UsageError
        from tensorsmith.model_io import load_proto

        if get_target(to) is not trt_target.TARGET:
            raise UsageError(f"--to {to}: build makes TensorRT engines only (--to trt)")
        values = {
            "shapes": shapes,
            "max_batch": max_batch,
            "workspace": workspace,
            "timing_cache": timing_cache,
            "builder_opt_level": builder_opt_level,
            "hardware_compat": hardware_compat,
            "version_compat": version_compat,
            "verify": not no_verify,
            "verify_data": verify_data,
            "rtol": rtol,
            "atol": atol,
        }
        opts = trt_target.trt_options(values, precision=precision, tolerance=jobs.given_tolerance(values))
        load_proto(model)  # unreadable input: exit 2 before anything else
        from tensorsmith import html

        html.check_path(report_html)
        trt_target.name_single_profile(opts, model)
        lint_report = _trt_lint(model, opts, json_out)
        trt_target.missing_for_build("run this command on a machine with an NVIDIA GPU and TensorRT 10 or 11")
        with progress(not json_out) as step:
            report = trt_target.build_prepared(model, output, opts, step, lint_report)
        if report_html:
            html.write_conversion_page(report, report_html, sys.argv)
        if json_out:
            print_json(report.to_dict())
        else:
            report.render(Console(highlight=False))
        return 0

    run_command(job, json_mode=json_out, html=report_html)


def _trt_lint(onnx_path, opts, json_out: bool, trt_version: str | None = None):
    """Lint for TensorRT before a build and print what it finds (never fatal: TensorRT decides)."""
    from tensorsmith.lint import render
    from tensorsmith.lint.trt import lint_trt

    report = lint_trt(
        onnx_path,
        trt_version=trt_version,
        shapes=opts.shapes,
        max_batch=opts.max_batch,
        precision=opts.precision,
    )
    if not json_out and not report.clean:
        render(report, Console(highlight=False))
    return report


@app.command()
def doctor(json_out: bool = FLAGS["json_out"][1]) -> None:
    """Versions, GPUs, and which --to targets and precisions this machine can produce (and why not)."""

    def job() -> int:
        from tensorsmith import doctor as doc

        info = doc.collect()
        if json_out:
            print_json(info)
        else:
            doc.render(info, Console(highlight=False))
        return 0

    run_command(job, json_mode=json_out)
