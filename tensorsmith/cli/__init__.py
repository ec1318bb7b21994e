"""The command line: ``tensorsmith.cli:app``. One module per group of commands, each
registering its commands on the one Typer ``app`` (``cli/app.py``); no logic
beyond parsing and printing."""

from __future__ import annotations

from tensorsmith.cli import jobs  # isort: skip - the order of `tensorsmith --help`
from tensorsmith.cli import compare, info, trt
from tensorsmith.cli.app import app

__all__ = ["app", "compare", "info", "jobs", "trt"]
