"""The three kinds of failure tensorsmith reports, and their exit codes.

Every error a user can cause ends as one of these; the CLI prints its message on
one line and exits with its code (see README, "Exit codes").
"""

from __future__ import annotations

import re
from typing import Any, Protocol


class JobReportLike(Protocol):
    """A job's report (``job_report.JobReport``, a TensorRT ``BuildReport``, ...)."""

    status: str
    output: Any

    def to_dict(self) -> dict: ...


class CheckReport(Protocol):
    """A numeric check's report (``verify.VerificationReport``)."""

    passed: bool

    def to_dict(self) -> dict: ...


class TensorsmithError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with.

    ``job``: the report of the job that failed, as far as it got (the CLI prints it
    with ``--json``, a recipe records it); ``precision_report``: the precision step's
    report (fp16/int8) when that step failed.
    """

    exit_code = 1
    job: JobReportLike | None
    precision_report: dict | None

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        job: JobReportLike | None = None,
        precision_report: dict | None = None,
    ):
        super().__init__(message)
        self.hint = hint
        self.job = job
        self.precision_report = precision_report

    def one_line(self) -> str:
        text = " ".join(str(self).split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class UsageError(TensorsmithError):
    """Bad usage or an input that cannot be read: missing, truncated, not a model."""

    exit_code = 2


class ConversionError(TensorsmithError):
    """A conversion, a pass or a backend build failed."""

    exit_code = 3


class VerificationError(TensorsmithError):
    """The result does not match the source within tolerance."""

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        report: CheckReport | None = None,
        hint: str | None = None,
        job: JobReportLike | None = None,
        precision_report: dict | None = None,
    ):
        super().__init__(message, hint=hint, job=job, precision_report=precision_report)
        self.report = report  # the numeric check that failed


# onnxruntime's messages carry its C++ source location, function signature and the
# failed check before the part a user can act on:
#   [ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape node.
#   Name:'r' Status Message: /onnxruntime_src/.../reshape_helper.h:91 onnxruntime::ReshapeHelper::
#   ReshapeHelper(const onnxruntime::TensorShape&, ...) input_shape_size == requested_shape_size
#   was false. The input tensor cannot be reshaped to the requested shape. ...
_ORT_PREFIX = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")
_ORT_SOURCE = re.compile(r"/onnxruntime_src/\S+:\d+ (?:[\w:~<>,*& ]+\((?:[^()]|\([^()]*\))*\)(?: const)? )?")
_ORT_CHECK = re.compile(r"^[^.]*? was false\. ")


def short(exc: BaseException | str, limit: int = 240) -> str:
    """An exception (or text) as one line of at most ``limit`` characters, for messages.

    onnxruntime's source locations, C++ signatures and failed-check expressions are
    dropped, keeping its own words (what failed, and the shapes or types involved).
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "onnxruntime" in text or "ONNXRuntimeError" in text:
        text = _ORT_PREFIX.sub("", text)
        parts = _ORT_SOURCE.split(text)
        text = parts[0] + "".join(_ORT_CHECK.sub("", p) for p in parts[1:])
    return text if len(text) <= limit else text[: limit - 3] + "..."


EXIT_OK = 0
EXIT_CODES = {
    0: "success",
    1: "one or more jobs failed (recipes); lint found problems",
    2: "bad usage, or an input that cannot be read",
    3: "a conversion, a pass or a build failed",
    4: "verification failed (no output is written)",
}
