"""Input specs: parsing ``--input-shape`` and filling symbolic dimensions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tensorsmith.errors import UsageError

# Documented defaults for symbolic dimensions when no --input-shape names them
# (README, "Verification inputs").
DEFAULT_BATCH = 1
DEFAULT_SPATIAL = 224
DEFAULT_OTHER = 16


@dataclass
class InputSpec:
    name: str
    dtype: np.dtype
    shape: list[int | str | None]  # ints, symbolic names, or None for unknown

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.shape)


def parse_shape_text(text: str, *, what: str = "--input-shape") -> list[int]:
    given = text.strip()
    text = given.lower().replace(",", "x")
    if not text:
        return []
    try:
        dims = [int(d) for d in text.split("x")]
    except ValueError:
        named = " (name the input with '=': NAME=1x3x224x224)" if ":" in given else ""
        raise UsageError(
            f"{what}: bad shape {given!r}; expected dimensions joined by 'x', e.g. 1x3x224x224{named}"
        ) from None
    if any(d < 0 for d in dims):
        raise UsageError(f"{what}: dimensions must be >= 0 in {given!r}")
    return dims


def named_items(items: list[str] | None, *, what: str, example: str) -> list[tuple[str, str, str]]:
    """Split ``NAME=VALUE`` flags (repeated, or comma-joined) into (name, value, item text).

    A piece without ``NAME=`` gets the name ``""`` (the only input, checked later);
    an empty name or a name given twice is a ``UsageError``.
    """
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for item in items or []:
        for part in _split_items(item):
            if "=" in part:
                name, _, value = part.rpartition("=")
                name = name.strip()
                if not name:
                    raise UsageError(f"{what}: missing input name in {part!r}; expected {example}")
            else:
                name, value = "", part
            if name in seen:
                raise UsageError(f"{what}: input {name or '(unnamed)'!r} given twice")
            seen.add(name)
            out.append((name, value, part))
    return out


def parse_input_shapes(items: list[str] | None) -> dict[str, list[int]]:
    """``["x=1x3x224x224", "mask=1x128"]`` -> ``{"x": [1,3,224,224], ...}``.

    A single item without ``NAME=`` applies to the only input (checked later).
    """
    return {
        name: parse_shape_text(dims)
        for name, dims, _ in named_items(items, what="--input-shape", example="NAME=1x3x224x224")
    }


def _split_items(item: str) -> list[str]:
    # allow "a=1x3,b=2x4" as well as repeated flags; a comma inside dims is ambiguous,
    # so split on commas only when every piece has a "=".
    pieces = [p.strip() for p in item.split(",") if p.strip()]
    if len(pieces) > 1 and all("=" in p for p in pieces):
        return pieces
    return [item.strip()]


def _is_spatial(spec: InputSpec, axis: int) -> bool:
    rank = len(spec.shape)
    if rank != 4 or axis == 0:
        return False
    # NCHW: axes 2,3 ; NHWC: axes 1,2 (decide by where a small static channel count is)
    c_first = isinstance(spec.shape[1], int) and spec.shape[1] in (1, 2, 3, 4)
    c_last = isinstance(spec.shape[3], int) and spec.shape[3] in (1, 2, 3, 4)
    if c_last and not c_first:
        return axis in (1, 2)
    return axis in (2, 3)


def resolve_shapes(
    specs: list[InputSpec],
    overrides: dict[str, list[int]] | None = None,
    *,
    batch: int | None = None,
) -> tuple[dict[str, list[int]], list[str]]:
    """Concrete shapes for every input, plus notes saying which defaults were used.

    Symbolic dims with the same name get the same value across inputs (a ``seq``
    shared by ``input_ids`` and ``attention_mask``).
    """
    overrides = dict(overrides or {})
    names = {s.name for s in specs}
    if "" in overrides:
        if len(specs) != 1:
            raise UsageError(
                "--input-shape without NAME= needs a model with exactly one input; "
                f"inputs are: {', '.join(sorted(names))}"
            )
        overrides[specs[0].name] = overrides.pop("")
    unknown = set(overrides) - names
    if unknown:
        raise UsageError(
            f"--input-shape names unknown input(s) {', '.join(sorted(unknown))}; "
            f"inputs are: {', '.join(s.name for s in specs)}"
        )
    symbols: dict[str, int] = {}
    # first, learn symbol values from overrides
    for spec in specs:
        if spec.name in overrides:
            dims = overrides[spec.name]
            if len(dims) != len(spec.shape) and spec.shape:
                raise UsageError(
                    f"--input-shape {spec.name}: rank {len(dims)} does not match the model's "
                    f"{len(spec.shape)} ({_fmt(spec.shape)})"
                )
            for want, got in zip(spec.shape, dims, strict=False):
                if isinstance(want, int) and want != got:
                    raise UsageError(
                        f"--input-shape {spec.name}: {_fmt(dims)} conflicts with the model's "
                        f"fixed shape {_fmt(spec.shape)}"
                    )
                if isinstance(want, str):
                    symbols.setdefault(want, got)
    shapes: dict[str, list[int]] = {}
    notes: list[str] = []
    for spec in specs:
        if spec.name in overrides:
            dims = list(overrides[spec.name])
            if batch is not None and dims and not isinstance(spec.shape[0], int):
                dims[0] = batch
            shapes[spec.name] = dims
            continue
        dims = []
        for axis, d in enumerate(spec.shape):
            if isinstance(d, int):
                dims.append(d)
                continue
            if axis == 0 and batch is not None:
                value, why = batch, "batch"
            elif isinstance(d, str) and d in symbols:
                value, why = symbols[d], None
            elif axis == 0:
                value, why = DEFAULT_BATCH, "batch"
            elif _is_spatial(spec, axis):
                value, why = DEFAULT_SPATIAL, "spatial"
            else:
                value, why = DEFAULT_OTHER, "other"
            if isinstance(d, str):
                symbols.setdefault(d, value)
            dims.append(value)
            if why:
                notes.append(f"{spec.name}[{axis}] ({d or '?'}) = {value} ({why} default)")
        shapes[spec.name] = dims
    return shapes, notes


def _fmt(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


def format_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
