"""Target ``tftrt``: a TF-TRT SavedModel from a TensorFlow SavedModel, verified against TensorFlow.

TF-TRT converts the SavedModel directly (no ONNX, no graph passes); the code is
``tensorsmith.convert.tftrt_backend``, called through its public names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tensorsmith import jobs, machine
from tensorsmith.config import TftrtConfig
from tensorsmith.convert.targets import Job, Rendered, Report, Step, capability

# the options TF-TRT takes besides its own (TftrtConfig)
SHARED_KEYS = {
    "from",
    "to",
    "precision",
    "shapes",
    "max_batch",
    "workspace",
    "signature",
    "calib",
    "verify",
    "verify_data",
    "rtol",
    "atol",
}


def tftrt_options(opts: dict):
    """``tftrt_backend.TftrtOptions`` from job options."""
    from tensorsmith.convert.tftrt_backend import TftrtOptions
    from tensorsmith.convert.trt import parse_workspace
    from tensorsmith.convert.trt.profiles import DEFAULT_MAX_BATCH, parse_profile_specs

    calib = opts.get("calib")
    tf = TftrtOptions(
        precision=opts.get("precision") or "fp32",
        profile_strategy=opts.get("profile_strategy") or "Optimal",
        shapes=jobs.guard("shapes", lambda: parse_profile_specs(opts.get("shapes"))),
        max_batch=opts.get("max_batch") or DEFAULT_MAX_BATCH,
        workspace=jobs.guard("workspace", lambda: parse_workspace(opts.get("workspace"))),
        signature=opts.get("signature") or "serving_default",
        calibration_data=Path(calib) if calib and calib != "random" else None,
        verify=opts.get("verify", True) is not False,
        verify_data=Path(opts["verify_data"]) if opts.get("verify_data") else None,
        tolerance=jobs.given_tolerance(opts),
    )
    jobs.guard("profile_strategy" if opts.get("profile_strategy") else "precision", tf.validate)
    return tf


class TftrtTarget:
    name = "tftrt"
    description = "TF-TRT SavedModel, verified vs TensorFlow"
    extension = ""
    writes_onnx = False
    needs = ("an NVIDIA GPU", "TensorFlow <= 2.17 built with TensorRT")
    Options = TftrtConfig
    lowers_in_graph = False
    builds_engine = False
    libraries = ("tensorflow", "tensorflow-cpu", "tf2onnx", "keras", "tf-keras", "tensorrt")

    def applies(self, key: str, framework: bool) -> bool:
        return key in SHARED_KEYS or key in TftrtConfig.model_fields

    def refusal(self, key: str) -> str | None:
        return "does not apply to 'to: tftrt' (TF-TRT converts the SavedModel directly)"

    def check_source(self, source_format: str | None) -> None:
        if source_format not in (None, "savedmodel"):
            raise jobs.OptionError(
                "to", f"'to: tftrt' converts a TensorFlow SavedModel folder; this model is {source_format}"
            )

    def plan(self, opts: dict[str, Any], source_format: str | None) -> tuple[str, dict[str, Any]]:
        return "tftrt_backend.convert_tftrt", {"tftrt": tftrt_options(opts)}

    def check_output(self, source: str, out: Path) -> None:
        return None

    def missing(self) -> list[str]:
        why = machine.tftrt_unavailable_reason()
        return [why] if why else []

    def capabilities(self, info: dict) -> dict[str, dict]:
        whys = (
            machine.tftrt_unavailable_reason(info["tensorflow"]),
            machine.gpu_unavailable_reason(info["gpus"]),
        )
        return {"tftrt": capability(*whys)}

    def run(self, job: Job, out: Path, step: Step, progress=None, on_lint=None) -> Report:
        from tensorsmith.convert import tftrt_backend

        report = tftrt_backend.convert_tftrt(job.source, out, job.kwargs["tftrt"], on_step=step)
        return Rendered(report, tftrt_backend.render)

    def main_output(self, report: Report, out: Path) -> Path:
        return out


TARGET = TftrtTarget()
