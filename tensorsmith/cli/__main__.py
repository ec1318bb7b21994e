"""``python -m tensorsmith.cli``: the command line."""

from tensorsmith.cli import app

app(prog_name="tensorsmith")
