"""The TensorRT backend: a ready-to-build ONNX -> serialized engine (``.plan``) + ``.plan.json``.

Modules, by job:

==================  ==============================================================
``options``         ``TrtOptions``, ``--workspace`` sizes, output names, the
                    ``tensorsmith build`` command of a ``--prepare-only`` run
``profiles``        optimization profiles: ``--shapes NAME=MIN:OPT:MAX``, defaults
``api``             ``import tensorrt`` (lazily), what the machine lacks, the network
                    mode per TensorRT version, the logger
``build``           parse, configure, build, verify, write; ``prepare`` (lint only)
``timing_cache``    the timing-cache file: load, merge under a lock, write back
``memory``          device buffers (torch.cuda or cuda-python)
``runner``          ``EngineRunner`` (a ``tensorsmith.runners`` runner), ``verify_engine``
``sidecar``         the ``.plan.json`` contents
``report``          ``BuildReport`` and its rendering
==================  ==============================================================

Written against the TensorRT 10 and 11 Python API (``import tensorrt``, imported
only inside the functions that build or run an engine). Every call is one the
TensorRT samples and Polygraphy use; where a call is not obvious the comment says
where it is documented:

* network: ``builder.create_network(flags)``; ``1 << int(NetworkDefinitionCreationFlag.
  STRONGLY_TYPED)`` on TensorRT 10 when the graph carries its precision (FP16/BF16
  tensors or Q/DQ). TensorRT 11 removed weak typing: every network is strongly
  typed, the flag is "accepted but ignored", and ``BuilderFlag.FP16``/``INT8``
  no longer exist (TensorRT 10.x -> 11.x migration guide, "Removed Python APIs").
  TensorRT's explicit-quantization guide: "Use explicit quantization with Strong
  Typing. Precision-control build flags are not required and should not be specified."
* TensorRT 10, FP32 graph with ``--precision fp16``: weak typing plus
  ``config.set_flag(BuilderFlag.FP16)``; the graph "asks for" FP16 only through that
  option. INT8 always needs Q/DQ in the graph (we never use implicit calibration).
* parser: ``trt.OnnxParser(network, logger).parse_from_file(path)`` (keeps the
  path so external data resolves, as Polygraphy's ``NetworkFromOnnxPath`` does);
  errors: ``parser.num_errors``, ``parser.get_error(i)`` with ``.code()``,
  ``.desc()``, ``.node()``, ``.node_name()``, ``.node_operator()`` (the
  ``nvonnxparser::IParserError`` members of TensorRT 10).
* profiles: ``builder.create_optimization_profile()``, ``profile.set_shape(name,
  min, opt, max)``, ``config.add_optimization_profile(profile)``.
* ``config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, n)``,
  ``config.builder_optimization_level``, ``config.hardware_compatibility_level =
  trt.HardwareCompatibilityLevel.AMPERE_PLUS``, ``BuilderFlag.VERSION_COMPATIBLE``.
* timing cache: ``config.create_timing_cache(bytes)``, ``config.set_timing_cache(
  cache, ignore_mismatch=False)``, after the build ``config.get_timing_cache()``,
  merged with what the file holds now (``cache.combine(prev, ignore_mismatch=True)``,
  under a lock file, as Polygraphy's ``EngineBytesFromNetwork`` does) and
  ``cache.serialize()`` written back atomically.
* ``builder.build_serialized_network(network, config)`` -> ``IHostMemory`` or None.
* running (verification): ``trt.Runtime(logger).deserialize_cuda_engine``,
  ``engine.create_execution_context()``, ``engine.num_io_tensors`` /
  ``get_tensor_name`` / ``get_tensor_mode`` / ``get_tensor_dtype``,
  ``context.set_input_shape``, ``context.get_tensor_shape``,
  ``context.set_tensor_address``, ``context.execute_async_v3(stream)`` (the
  TensorRT samples' ``common_runtime.py``). Device buffers come from torch.cuda
  or cuda-python, whichever is installed.

None of this was run against a real TensorRT here (no GPU, no TensorRT): the tests
drive it with a recording stand-in (``tests/fake_tensorrt.py``); tests marked
``gpu`` run the real thing where ``tensorrt`` imports and a GPU is present.
"""

from __future__ import annotations

from tensorsmith.convert.trt.api import (
    MIN_MAJOR,
    NetworkMode,
    import_tensorrt,
    missing_for_build,
    select_mode,
    trt_major,
)
from tensorsmith.convert.trt.build import build_engine, hardware_compat_level, prepare
from tensorsmith.convert.trt.memory import device_memory
from tensorsmith.convert.trt.options import (
    HARDWARE_COMPAT,
    HARDWARE_COMPAT_SINCE,
    PRECISION_TOLERANCE,
    TrtOptions,
    add_input_shape_profiles,
    build_command,
    lint_report_path,
    parse_workspace,
    prepared_onnx_path,
    sidecar_path,
)
from tensorsmith.convert.trt.profiles import (
    DEFAULT_MAX_BATCH,
    Profile,
    input_shape_profiles,
    resolve_profiles,
)
from tensorsmith.convert.trt.report import BuildReport, ParserError, render
from tensorsmith.convert.trt.runner import EngineRunner, verify_engine
from tensorsmith.convert.trt.sidecar import sha256_file, sidecar_contents

__all__ = [
    "DEFAULT_MAX_BATCH",
    "HARDWARE_COMPAT",
    "HARDWARE_COMPAT_SINCE",
    "MIN_MAJOR",
    "PRECISION_TOLERANCE",
    "BuildReport",
    "EngineRunner",
    "NetworkMode",
    "ParserError",
    "Profile",
    "TrtOptions",
    "add_input_shape_profiles",
    "build_command",
    "build_engine",
    "device_memory",
    "hardware_compat_level",
    "import_tensorrt",
    "input_shape_profiles",
    "lint_report_path",
    "missing_for_build",
    "parse_workspace",
    "prepare",
    "prepared_onnx_path",
    "render",
    "resolve_profiles",
    "select_mode",
    "sha256_file",
    "sidecar_contents",
    "sidecar_path",
    "trt_major",
    "verify_engine",
]
