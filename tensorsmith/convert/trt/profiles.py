"""Optimization profiles for dynamic inputs: ``--shapes NAME=MIN:OPT:MAX`` and defaults.

A TensorRT engine built from a graph with dynamic dimensions needs, for every
input with a dynamic dimension, the smallest, the typical and the largest shape
it will be run at (``IOptimizationProfile.set_shape(name, min, opt, max)``).
TF-TRT's ``build()`` takes the same three shapes. This module parses them, fills
the one default we can defend (a dynamic *batch* axis 0 gets ``1:1:N`` with
``N = --max-batch``) and names every input still left without one. It needs
neither TensorRT nor a GPU: ``tensorsmith lint`` uses it as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tensorsmith.errors import UsageError
from tensorsmith.shapes import InputSpec, named_items, parse_shape_text

DEFAULT_MAX_BATCH = 8


@dataclass
class Profile:
    """min/opt/max shapes of one input."""

    min: list[int]
    opt: list[int]
    max: list[int]
    source: str = "--shapes"  # or "default batch"

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max, "source": self.source}

    def text(self) -> str:
        fmt = lambda s: "x".join(map(str, s)) or "scalar"  # noqa: E731
        return f"{fmt(self.min)}:{fmt(self.opt)}:{fmt(self.max)}"


@dataclass
class ProfileResolution:
    """What ``resolve_profiles`` decided for each input."""

    profiles: dict[str, Profile] = field(default_factory=dict)  # every dynamic input that has one
    missing: dict[str, list[int]] = field(
        default_factory=dict
    )  # dynamic input -> axes left without a profile
    notes: list[str] = field(default_factory=list)

    def missing_text(self, specs: list[InputSpec]) -> str:
        by_name = {s.name: s for s in specs}
        parts = []
        for name, axes in self.missing.items():
            shape = by_name[name].shape if name in by_name else []
            dims = ", ".join(f"{a} ({shape[a] if a < len(shape) and shape[a] else '?'})" for a in axes)
            parts.append(f"{name} (dynamic axes {dims})")
        return "; ".join(parts)


def parse_profile_specs(items: list[str] | None, *, what: str = "--shapes") -> dict[str, Profile]:
    """``["x=1x3x224x224:8x3x224x224:32x3x224x224"]`` -> ``{"x": Profile(...)}``.

    ``NAME=`` may be left out for a one-input model (checked in ``resolve_profiles``);
    ``NAME=SHAPE`` with a single shape means min = opt = max.
    """
    out: dict[str, Profile] = {}
    for name, text, part in named_items(items, what=what, example="NAME=MIN:OPT:MAX"):
        pieces = list(text.split(":"))
        if len(pieces) == 1:
            pieces = pieces * 3
        if len(pieces) != 3 or not all(p.strip() for p in pieces):
            raise UsageError(
                f"{what}: {part!r} needs three shapes MIN:OPT:MAX, e.g. "
                "x=1x3x224x224:8x3x224x224:32x3x224x224"
            )
        mn, opt, mx = (parse_shape_text(p, what=what) for p in pieces)
        if not (len(mn) == len(opt) == len(mx)):
            raise UsageError(f"{what} {name or part}: MIN, OPT and MAX have different ranks")
        for a, (lo, mid, hi) in enumerate(zip(mn, opt, mx, strict=False)):
            if not lo <= mid <= hi:
                raise UsageError(
                    f"{what} {name or part}: axis {a} needs MIN <= OPT <= MAX, got {lo}:{mid}:{hi}"
                )
        out[name] = Profile(mn, opt, mx)
    return out


def dynamic_axes(spec: InputSpec) -> list[int]:
    return [a for a, d in enumerate(spec.shape) if not isinstance(d, int) or d < 0]


def input_shape_profiles(
    specs: list[InputSpec],
    input_shapes: dict[str, list[int]] | None,
    given: dict[str, Profile] | None = None,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> dict[str, Profile]:
    """``--input-shape`` as the default profile of each dynamic input ``--shapes`` does not
    name (issue 17): ``MIN=OPT=MAX`` = the given shape on every axis but a dynamic batch
    axis 0, which keeps ``1:1:max_batch``. Inputs whose only dynamic axis is the batch
    keep the default batch profile; a shape of the wrong rank is left to the checks."""
    shapes = dict(input_shapes or {})
    given = given or {}
    if "" in shapes and len(specs) == 1:
        shapes[specs[0].name] = shapes.pop("")
    if "" in given:
        return {}
    out = {}
    for spec in specs:
        shape = shapes.get(spec.name)
        axes = dynamic_axes(spec)
        if shape is None or spec.name in given or axes in ([], [0]) or len(shape) != len(spec.shape):
            continue
        lo, opt, hi = list(shape), list(shape), list(shape)
        if 0 in axes:
            lo[0], opt[0], hi[0] = 1, 1, max_batch
        out[spec.name] = Profile(lo, opt, hi, source="--input-shape")
    return out


def resolve_profiles(
    specs: list[InputSpec],
    given: dict[str, Profile] | None = None,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    what: str = "--shapes",
) -> ProfileResolution:
    """A profile for every dynamic input: the given ones, checked against the model,
    plus the default ``1:1:max_batch`` for inputs whose only dynamic axis is 0.

    Raises ``UsageError`` for a profile that names an unknown input, has the wrong
    rank or contradicts a fixed dimension. Inputs still without a profile are
    returned in ``missing`` (the caller decides whether that is an error).
    """
    given = dict(given or {})
    if max_batch < 1:
        raise UsageError("--max-batch must be >= 1")
    names = [s.name for s in specs]
    if "" in given:
        if len(specs) != 1:
            raise UsageError(
                f"{what} without NAME= needs a model with exactly one input; inputs are: {', '.join(names)}"
            )
        given[specs[0].name] = given.pop("")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UsageError(
            f"{what} names unknown input(s) {', '.join(unknown)}; inputs are: {', '.join(names)}"
        )
    res = ProfileResolution()
    symbols: dict[str, tuple[int, int, int]] = {}
    for spec in specs:
        if spec.name not in given:
            continue
        prof = given[spec.name]
        if spec.shape and len(prof.min) != len(spec.shape):
            raise UsageError(
                f"{what} {spec.name}: rank {len(prof.min)} does not match the model's {len(spec.shape)} "
                f"({_fmt(spec.shape)})"
            )
        for a, d in enumerate(spec.shape):
            if isinstance(d, int) and d >= 0 and not (prof.min[a] == prof.opt[a] == prof.max[a] == d):
                raise UsageError(
                    f"{what} {spec.name}: axis {a} is fixed at {d} in the model, profile gives "
                    f"{prof.min[a]}:{prof.opt[a]}:{prof.max[a]}"
                )
            if isinstance(d, str) and d:
                triple = (prof.min[a], prof.opt[a], prof.max[a])
                if symbols.setdefault(d, triple) != triple:
                    res.notes.append(
                        f"dimension {d!r} gets different ranges on different inputs "
                        f"({symbols[d]} and {triple}); at run time they must be equal"
                    )
        res.profiles[spec.name] = prof
    default_batch = [s.name for s in specs if s.name not in given and dynamic_axes(s) == [0]]
    for spec in specs:
        axes = dynamic_axes(spec)
        if not axes or spec.name in given:
            continue
        if axes == [0]:
            fixed = [d for d in spec.shape[1:] if isinstance(d, int)]  # all fixed: axes == [0]
            res.profiles[spec.name] = Profile(
                [1, *fixed], [1, *fixed], [max_batch, *fixed], source="default batch"
            )
        else:
            res.missing[spec.name] = axes
    if default_batch:
        res.notes.append(
            f"batch axis of {', '.join(default_batch)}: default profile 1:1:{max_batch} (--max-batch)"
        )
    return res


def _fmt(shape) -> str:
    return "x".join("?" if d is None or isinstance(d, str) else str(d) for d in shape) or "scalar"
