"""Graph passes: one module each, one registry keyed by name.

>>> from tensorsmith.passes import PASSES, DEFAULT_PIPELINE
>>> sorted(PASSES) # doctest: +SKIP
"""

from __future__ import annotations

from tensorsmith.errors import UsageError
from tensorsmith.passes.base import Pass, PassOptions
from tensorsmith.passes.cse import EliminateCommonSubexpressions
from tensorsmith.passes.dead_code import RemoveDeadCode
from tensorsmith.passes.dropout import RemoveDropout
from tensorsmith.passes.fold_constants import FoldConstants
from tensorsmith.passes.fuse_conv_affine import FuseConvAffine
from tensorsmith.passes.fuse_conv_bn import FuseConvBatchNorm
from tensorsmith.passes.fuse_hardswish import FuseHardSwish
from tensorsmith.passes.identity import RemoveIdentity
from tensorsmith.passes.manager import PassManager, PassRecord
from tensorsmith.passes.merge_slices import MergeSlices
from tensorsmith.passes.reshape_copy_dims import ReshapeCopyDims
from tensorsmith.passes.sink_initializers import SinkInitializers

# One explicit, ordered registry: the order is the default pipeline's order.
PASSES: dict[str, type[Pass]] = {
    cls.name: cls
    for cls in (
        RemoveDropout,
        RemoveIdentity,
        FoldConstants,
        ReshapeCopyDims,
        MergeSlices,
        FuseConvBatchNorm,
        FuseConvAffine,
        FuseHardSwish,
        EliminateCommonSubexpressions,
        RemoveDeadCode,
        SinkInitializers,
    )
}

DEFAULT_PIPELINE: tuple[str, ...] = tuple(PASSES)


def resolve(names: list[str] | None = None, skip: list[str] | None = None) -> list[str]:
    """Validate pass names; ``None`` means the default pipeline."""
    chosen = list(DEFAULT_PIPELINE) if not names else list(names)
    skip = list(skip or [])
    for name in [*chosen, *skip]:
        if name not in PASSES:
            raise UsageError(f"unknown pass {name!r}; known passes: {', '.join(PASSES)}")
    return [n for n in chosen if n not in skip]


def create(names: list[str], options: dict[str, dict] | None = None) -> list[Pass]:
    options = options or {}
    unknown = set(options) - set(PASSES)
    if unknown:
        raise UsageError(f"options given for unknown pass(es): {', '.join(sorted(unknown))}")
    out = []
    for name in names:
        try:
            out.append(PASSES[name](options.get(name)))
        except Exception as exc:  # pydantic ValidationError
            raise UsageError(f"bad options for pass {name!r}: {exc}".splitlines()[0]) from exc
    return out


__all__ = [
    "DEFAULT_PIPELINE",
    "PASSES",
    "Pass",
    "PassManager",
    "PassOptions",
    "PassRecord",
    "create",
    "resolve",
]
