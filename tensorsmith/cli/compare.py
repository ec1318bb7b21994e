"""``tensorsmith compare A B``: any two models the tool can run, on the same inputs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tensorsmith.cli.app import app, print_json, run_command
from tensorsmith.cli.options import FLAGS


@app.command()
def compare(
    a: str = typer.Argument(..., metavar="A", help="Reference: ONNX, TensorFlow/PyTorch source, or a .plan."),
    b: str = typer.Argument(..., metavar="B", help="Candidate, run on the same inputs."),
    a_format: str | None = typer.Option(None, "--a-from", help="Force A's format (as convert --from)."),
    b_format: str | None = typer.Option(None, "--b-from", help="Force B's format."),
    input_shape: list[str] | None = FLAGS["input_shape"][1],
    data: Path | None = typer.Option(
        None, "--data", help="Inputs from FILE.npz (arrays named after A's inputs) instead of seeded random."
    ),
    rtol: float | None = FLAGS["rtol"][1],
    atol: float | None = FLAGS["atol"][1],
    trust_remote_code: bool = FLAGS["trust_remote_code"][1],
    json_out: bool = FLAGS["json_out"][1],
) -> None:
    """Run A and B on the same inputs and compare every output. Exit 0 equal within tolerance, 4 differ."""

    def job() -> int:
        from tensorsmith.compare_models import compare_models
        from tensorsmith.shapes import parse_input_shapes
        from tensorsmith.tolerances import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance

        report = compare_models(
            a,
            b,
            a_format=a_format,
            b_format=b_format,
            input_shapes=parse_input_shapes(input_shape),
            data=data,
            tolerance=Tolerance(
                rtol=DEFAULT_RTOL if rtol is None else rtol, atol=DEFAULT_ATOL if atol is None else atol
            ),
            trust_remote_code=trust_remote_code,
        )
        if json_out:
            print_json(report.to_dict())
        else:
            report.render(Console(highlight=False))
        return 0 if report.passed else 4

    run_command(job, json_mode=json_out)
