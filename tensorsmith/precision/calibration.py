"""Calibration and validation data: where the samples INT8 (and the gates) run on come from.

A *sample* is one feed: ``{input name: array}`` with the input's rank. Sources:

* a ``.npz`` file or a folder of ``.npz``/``.npy`` files, arrays named after the
  inputs (a ``.npy`` file holds the only input of a one-input model, or is named
  after an input). An array with one more dimension than its input holds several
  samples along axis 0; an array of the input's rank whose batch dimension is
  symbolic is split into batch-1 samples.
* a folder of images (one image input) with ``--calib-preprocess``
  ``"resize=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=NCHW"``.
* ``--calib-loader module:function``: user code (opted into by that flag) that
  returns an iterable of samples (dicts, or arrays for a one-input model).
* ``random``: seeded N(0, 1) inputs, for smoke tests only (the report says so).

Every array is checked against the model's inputs before anything runs: a wrong
name, rank, fixed dimension or dtype kind, or a NaN/Inf, is a ``UsageError``
(exit 2) naming the file, the input, the expected and the found shape.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tensorsmith.errors import UsageError, short
from tensorsmith.shapes import InputSpec, format_shape, resolve_shapes

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm"}
ARRAY_EXTS = {".npz", ".npy"}
SPLIT_SEED = 1234
RANDOM_SEED = 4321


@dataclass
class Dataset:
    """Samples plus where they came from (for the report)."""

    samples: list[dict[str, np.ndarray]]
    source: str
    random: bool = False
    files: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "source": self.source,
            "samples": len(self.samples),
            "random": self.random,
            "files": self.files,
        }


# ---------------------------------------------------------------------------
# arrays -> samples


def _kind_ok(want: np.dtype, got: np.dtype) -> bool:
    if want.kind == "f":
        return got.kind == "f"
    if want.kind in "iu":
        return got.kind in "iu"
    if want.kind == "b":
        return got.kind == "b"
    return want == got


def _check_finite(arr: np.ndarray, source: str, name: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "Inf"
        raise UsageError(f"{source}: array {name!r} contains {bad} values")


def samples_from_arrays(
    arrays: dict[str, np.ndarray], specs: list[InputSpec], source: str
) -> list[dict[str, np.ndarray]]:
    """Validate ``arrays`` (named after the inputs) and split them into samples."""
    missing = [s for s in specs if s.name not in arrays]
    if missing:
        s = missing[0]
        raise UsageError(
            f"{source}: no array for input {s.name!r} (expected shape {format_shape(s.shape)}); "
            f"found: {', '.join(f'{k} {list(np.shape(v))}' for k, v in arrays.items()) or 'no arrays'}"
        )
    stacked: dict[str, bool] = {}
    counts: set[int] = set()
    for spec in specs:
        arr = np.asarray(arrays[spec.name])
        rank = len(spec.shape)
        if not _kind_ok(spec.dtype, arr.dtype):
            raise UsageError(
                f"{source}: array {spec.name!r} has dtype {arr.dtype}, input {spec.name!r} expects {spec.dtype}"
            )
        if arr.ndim == rank + 1:
            stacked[spec.name] = True
            counts.add(arr.shape[0])
        elif arr.ndim == rank:
            stacked[spec.name] = False
        else:
            raise UsageError(
                f"{source}: input {spec.name!r} expects shape {format_shape(spec.shape)}, "
                f"found {list(arr.shape)}"
            )
        sample_shape = arr.shape[1:] if stacked[spec.name] else arr.shape
        for want, got in zip(spec.shape, sample_shape, strict=False):
            if isinstance(want, int) and want != got:
                raise UsageError(
                    f"{source}: input {spec.name!r} expects shape {format_shape(spec.shape)}, "
                    f"found {list(arr.shape)}"
                )
        _check_finite(arr, source, spec.name)
    if len(counts) > 1:
        raise UsageError(f"{source}: arrays hold different numbers of samples along axis 0: {sorted(counts)}")

    def cast(spec: InputSpec, arr: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(arr.astype(spec.dtype, copy=False))

    if counts:  # several samples stacked along a new axis 0
        n = counts.pop()
        return [
            {s.name: cast(s, arrays[s.name][i] if stacked[s.name] else arrays[s.name]) for s in specs}
            for i in range(n)
        ]
    # one feed; split a symbolic batch into batch-1 samples when every input agrees
    batches = {np.shape(arrays[s.name])[0] for s in specs if s.shape and not isinstance(s.shape[0], int)}
    splittable = (
        specs and all(s.shape and not isinstance(s.shape[0], int) for s in specs) and len(batches) == 1
    )
    if splittable and (b := batches.pop()) > 1:
        return [{s.name: cast(s, np.asarray(arrays[s.name])[i : i + 1]) for s in specs} for i in range(b)]
    return [{s.name: cast(s, np.asarray(arrays[s.name])) for s in specs}]


def _load_npz(path: Path, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise UsageError(f"{path}: not a readable .npz file ({short(exc, 160)})") from None
    return samples_from_arrays(arrays, specs, str(path))


def _load_npy(path: Path, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UsageError(f"{path}: not a readable .npy file ({short(exc, 160)})") from None
    if len(specs) == 1:
        return samples_from_arrays({specs[0].name: arr}, specs, str(path))
    raise UsageError(
        f"{path}: a .npy file holds one array, but the model has {len(specs)} inputs "
        f"({', '.join(s.name for s in specs)}); use .npz files with arrays named after the inputs"
    )


# ---------------------------------------------------------------------------
# images


@dataclass
class Preprocess:
    size: tuple[int, int] | None = None  # (H, W)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    layout: str = "NCHW"
    color: str | None = None  # RGB, BGR or L; default from the channel count

    def describe(self) -> str:
        size = "input size" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        return (
            f"resize={size}, scale={self.scale:g}, mean={','.join(f'{m:g}' for m in self.mean)}, "
            f"std={','.join(f'{s:g}' for s in self.std)}, layout={self.layout}"
        )


PREPROCESS_KEYS = ("resize", "mean", "std", "scale", "layout", "color")


def parse_preprocess(text: str | None) -> Preprocess:
    """``"resize=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=NCHW"``."""
    pre = Preprocess()
    if not text:
        return pre
    values: dict[str, list[str]] = {}
    current = None
    for token in [t.strip() for t in text.split(",") if t.strip()]:
        if "=" in token:
            current, _, first = token.partition("=")
            current = current.strip().lower()
            if current not in PREPROCESS_KEYS:
                raise UsageError(
                    f"--calib-preprocess: unknown key {current!r}; known: {', '.join(PREPROCESS_KEYS)}"
                )
            values[current] = [first.strip()] if first.strip() else []
        elif current is None:
            raise UsageError(f"--calib-preprocess: expected KEY=VALUE, got {token!r}")
        else:
            values[current].append(token)

    def floats(key: str) -> tuple[float, ...]:
        try:
            out = tuple(float(v) for v in values[key])
        except ValueError:
            raise UsageError(
                f"--calib-preprocess: {key} needs numbers, got {','.join(values[key])!r}"
            ) from None
        if len(out) not in (1, 3):
            raise UsageError(f"--calib-preprocess: {key} takes 1 or 3 numbers, got {len(out)}")
        return out

    if "resize" in values:
        raw = "x".join(values["resize"]).lower()
        try:
            dims = [int(d) for d in raw.split("x")]
        except ValueError:
            raise UsageError(f"--calib-preprocess: resize takes N or HxW, got {raw!r}") from None
        if len(dims) == 1:
            dims = dims * 2
        if len(dims) != 2 or min(dims) <= 0:
            raise UsageError(f"--calib-preprocess: resize takes N or HxW, got {raw!r}")
        pre.size = (dims[0], dims[1])
    if "mean" in values:
        pre.mean = floats("mean")
    if "std" in values:
        pre.std = floats("std")
        if any(s == 0 for s in pre.std):
            raise UsageError("--calib-preprocess: std must not be 0")
    if "scale" in values:
        (scale,) = floats("scale")[:1]
        pre.scale = scale
    if "layout" in values:
        pre.layout = "".join(values["layout"]).upper()
        if pre.layout not in ("NCHW", "NHWC"):
            raise UsageError(f"--calib-preprocess: layout is NCHW or NHWC, got {pre.layout!r}")
    if "color" in values:
        pre.color = "".join(values["color"]).upper()
        if pre.color not in ("RGB", "BGR", "L"):
            raise UsageError(f"--calib-preprocess: color is RGB, BGR or L, got {pre.color!r}")
    return pre


def _image_spec(
    specs: list[InputSpec], pre: Preprocess, source: str
) -> tuple[InputSpec, int, tuple[int, int]]:
    if len(specs) != 1 or len(specs[0].shape) != 4:
        raise UsageError(
            f"{source}: images can calibrate a model with one rank-4 image input; this model has "
            f"{', '.join(f'{s.name} {format_shape(s.shape)}' for s in specs)}",
            hint="use .npz files or --calib-loader",
        )
    spec = specs[0]
    c_axis, h_axis, w_axis = (1, 2, 3) if pre.layout == "NCHW" else (3, 1, 2)
    channels = spec.shape[c_axis] if isinstance(spec.shape[c_axis], int) else 3
    if pre.size is not None:
        size = pre.size
    elif isinstance(h := spec.shape[h_axis], int) and isinstance(w := spec.shape[w_axis], int):
        size = (h, w)
    else:
        raise UsageError(
            f"{source}: input {spec.name!r} {format_shape(spec.shape)} has no fixed size; "
            "give resize=HxW in --calib-preprocess"
        )
    if channels not in (1, 3):
        raise UsageError(
            f"{source}: input {spec.name!r} has {channels} channels; images give 1 or 3 ({pre.layout})"
        )
    return spec, channels, size


def load_image(
    path: Path, spec: InputSpec, channels: int, size: tuple[int, int], pre: Preprocess
) -> dict[str, np.ndarray]:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise UsageError("reading calibration images needs Pillow", hint="pip install pillow") from None
    color = pre.color or ("L" if channels == 1 else "RGB")
    try:
        with Image.open(path) as opened:
            img = opened.convert("L" if color == "L" else "RGB")
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UsageError(f"{path}: cannot decode image ({short(exc, 160)})") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if color == "BGR":
        arr = arr[:, :, ::-1]
    arr = arr * pre.scale
    mean = np.asarray(pre.mean, np.float32).reshape(1, 1, -1)
    std = np.asarray(pre.std, np.float32).reshape(1, 1, -1)
    arr = (arr - mean) / std
    if pre.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    arr = np.ascontiguousarray(arr[None]).astype(spec.dtype if spec.dtype.kind == "f" else np.float32)
    return {spec.name: arr}


# ---------------------------------------------------------------------------
# sources


def _shuffled(files: list[Path]) -> list[Path]:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(files))
    return [files[i] for i in order]


def load_path(
    path: str | os.PathLike,
    specs: list[InputSpec],
    *,
    what: str = "--calib",
    preprocess: str | None = None,
    limit: int | None = None,
) -> Dataset:
    """Samples from a .npz/.npy file, an image, or a folder of them (at most ``limit``)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} {p}: no such file or folder")
    pre = parse_preprocess(preprocess)
    if p.is_file():
        files = [p]
    else:
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        files = [f for f in files if f.suffix.lower() in ARRAY_EXTS | IMAGE_EXTS]
        if not files:
            raise UsageError(f"{what} {p}: the folder holds no calibration data (.npz, .npy or images)")
        # a folder sorted by class must not give the gate only the last class
        files = _shuffled(files)
    kinds = {"image" if f.suffix.lower() in IMAGE_EXTS else "array" for f in files}
    if len(kinds) > 1:
        raise UsageError(f"{what} {p}: mixes images and array files; use one kind")
    samples: list[dict[str, np.ndarray]] = []
    used = 0
    if kinds == {"image"}:
        if preprocess is None:
            raise UsageError(
                f"{what} {p}: images need --calib-preprocess, e.g. "
                '"resize=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=NCHW"'
            )
        spec, channels, size = _image_spec(specs, pre, f"{what} {p}")
        for f in files:
            if limit is not None and len(samples) >= limit:
                break
            samples.append(load_image(f, spec, channels, size, pre))
            used += 1
        source = f"{p} (images: {pre.describe()})"
    else:
        for f in files:
            if limit is not None and len(samples) >= limit:
                break
            suffix = f.suffix.lower()
            if suffix == ".npz":
                samples.extend(_load_npz(f, specs))
            elif suffix == ".npy":
                samples.extend(_load_npy(f, specs))
            else:
                raise UsageError(f"{f}: not calibration data; expected .npz, .npy or an image")
            used += 1
        source = str(p)
    if not samples:
        raise UsageError(f"{what} {p}: no samples")
    if limit is not None:
        samples = samples[:limit]
    return Dataset(samples, source, files=used)


def load_loader(spec_text: str, specs: list[InputSpec], *, limit: int | None = None) -> Dataset:
    """``module:function`` returning an iterable of samples (user code, opted into by the flag)."""
    module_name, sep, fn_name = spec_text.partition(":")
    if not sep or not module_name or not fn_name:
        raise UsageError(f"--calib-loader {spec_text!r}: expected module:function")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise UsageError(
                f"--calib-loader {spec_text}: cannot import {module_name!r} ({short(exc, 160)})"
            ) from None
    finally:
        if added:
            sys.path.remove(cwd)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UsageError(f"--calib-loader {spec_text}: {module_name} has no function {fn_name!r}")
    try:
        items: Iterable[Any] = fn()
        samples: list[dict[str, np.ndarray]] = []
        for i, item in enumerate(items):
            if limit is not None and len(samples) >= limit:
                break
            source = f"--calib-loader {spec_text} item {i}"
            if isinstance(item, dict):
                arrays = item
            elif len(specs) == 1:
                arrays = {specs[0].name: item}
            else:
                raise UsageError(
                    f"{source}: a multi-input model needs dicts named after the inputs, got {type(item).__name__}"
                )
            samples.extend(samples_from_arrays({k: np.asarray(v) for k, v in arrays.items()}, specs, source))
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(
            f"--calib-loader {spec_text} failed: {type(exc).__name__}: {short(exc, 160)}"
        ) from None
    if not samples:
        raise UsageError(f"--calib-loader {spec_text}: returned no samples")
    return Dataset(samples[:limit] if limit else samples, f"--calib-loader {spec_text}")


def random_dataset(
    specs: list[InputSpec],
    input_shapes: dict[str, list[int]] | None,
    n: int,
    *,
    seed: int = RANDOM_SEED,
    int_bounds: dict[str, int] | None = None,
) -> Dataset:
    """Seeded random samples (N(0,1) floats; integers in [0, 10), or below the size of the
    table they index, ``verify.integer_bounds``); smoke tests only."""
    from tensorsmith.verify import random_inputs

    shapes, notes = resolve_shapes(specs, input_shapes)
    samples = [random_inputs(specs, shapes, seed=seed + i, int_bounds=int_bounds) for i in range(n)]
    return Dataset(samples, "random", random=True, notes=notes)


def split_holdout(
    data: Dataset, calib_limit: int, *, max_val: int = 32, what: str = "--calib"
) -> tuple[Dataset, Dataset]:
    """Hold back part of ``data`` for the gate: 20% (1..max_val samples) never used for calibration."""
    n = len(data.samples)
    if n < 2:
        raise UsageError(
            f"{what} {data.source}: {n} sample; the accuracy gate needs samples not used for calibration",
            hint="give more samples or --val PATH",
        )
    n_val = max(1, min(max_val, round(n * 0.2)))
    calib = Dataset(
        data.samples[: n - n_val][:calib_limit], data.source, data.random, data.files, list(data.notes)
    )
    val = Dataset(data.samples[n - n_val :], f"held back from {data.source}", data.random)
    return calib, val
