"""A RECORDING STAND-IN for the ``tensorrt`` Python module. Tests only; it is not TensorRT.

TensorRT cannot be installed where these tests run (no GPU; its wheels fetch their
libraries from NVIDIA's index), so the tests of ``tensorsmith.convert.trt_backend``
put this module into ``sys.modules["tensorrt"]`` (``install(monkeypatch, ...)``).
It implements just the TensorRT 10/11 Python API surface the backend calls, with the
same names and call shapes, and records every call so tests can assert what the
backend asked TensorRT to do (network flags, builder flags, profiles, timing cache,
memory pool limits...). Where TensorRT would refuse something we know it refuses
(a dynamic input without a profile, precision flags on a strongly typed network,
``BuilderFlag.FP16`` on TensorRT 11 where it no longer exists), this stand-in
refuses it too. "Engines" it builds are JSON; running one evaluates the ONNX model
with onnxruntime on the CPU, reading and writing the buffers whose host addresses
the backend bound with ``set_tensor_address`` (tests pass host memory).

Nothing here says TensorRT itself behaves this way beyond the API shape; the README
states which paths were run on real TensorRT (none, in this repository's CI).
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import json
import sys
import types

import numpy as np

__version__ = "10.13.3.9"
IS_FAKE = True

STATE: dict = {}

# The stand-in's own helpers: everything else it exposes is a real ``tensorrt`` name of
# the version it emulates (checked against NVIDIA's bindings by tests/test_trt_api_surface.py)
FAKE_HELPERS = frozenset({"IS_FAKE", "STATE", "FAKE_HELPERS", "configure", "install", "HostMemory"})


def configure(
    *,
    version: str = "10.13.3.9",
    reject_ops=(),
    device: str = "fake-sm86",
    perturb: float = 0.0,
    fail_build: bool = False,
) -> None:
    """Reset the recordings and choose the behaviour of the next calls."""
    global __version__, BuilderFlag, NetworkDefinitionCreationFlag, HardwareCompatibilityLevel
    __version__ = version
    STATE.clear()
    STATE.update(
        calls=[],
        builders=[],
        networks=[],
        configs=[],
        parsers=[],
        builds=[],
        contexts=[],
        reject_ops=set(reject_ops),
        device=device,
        perturb=float(perturb),
        fail_build=fail_build,
    )
    major = int(version.split(".")[0])
    names = ["FP16", "INT8", "BF16", "FP8"] if major < 11 else []  # removed in TensorRT 11
    names += [
        "DEBUG",
        "REFIT",
        "TF32",
        "SPARSE_WEIGHTS",
        "VERSION_COMPATIBLE",
        "EXCLUDE_LEAN_RUNTIME",
        "DISABLE_TIMING_CACHE",
        "STRIP_PLAN",
    ]
    BuilderFlag = enum.IntEnum("BuilderFlag", names, start=0)
    sys.modules[__name__].BuilderFlag = BuilderFlag
    # EXPLICIT_BATCH was removed in TensorRT 11 (every network is explicit-batch)
    flags = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if major < 11 else {"STRONGLY_TYPED": 1}
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", flags)
    # SAME_COMPUTE_CAPABILITY first appears in the 10.9 bindings (absent from 10.8's)
    minor = int(version.split(".")[1]) if version.count(".") else 0
    levels = {"NONE": 0, "AMPERE_PLUS": 1}
    if (major, minor) >= (10, 9):
        levels["SAME_COMPUTE_CAPABILITY"] = 2
    HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel", levels)
    module = sys.modules[__name__]
    module.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    module.HardwareCompatibilityLevel = HardwareCompatibilityLevel


def _record(name, *args, **kwargs):
    STATE.setdefault("calls", []).append((name, args, kwargs))


# -- enums ---------------------------------------------------------------------


NetworkDefinitionCreationFlag = enum.IntEnum(
    "NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1}
)  # configure()


BuilderFlag = enum.IntEnum("BuilderFlag", ["FP16", "INT8"], start=0)  # replaced by configure()


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1


HardwareCompatibilityLevel = enum.IntEnum(
    "HardwareCompatibilityLevel", {"NONE": 0, "AMPERE_PLUS": 1}
)  # configure()


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


float32, float16, int8, int32, bool, uint8, bfloat16, int64 = (  # noqa: A001 - TensorRT's names
    DataType.FLOAT,
    DataType.HALF,
    DataType.INT8,
    DataType.INT32,
    DataType.BOOL,
    DataType.UINT8,
    DataType.BF16,
    DataType.INT64,
)

_NP = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT8: np.int8,
    DataType.INT32: np.int32,
    DataType.BOOL: np.bool_,
    DataType.UINT8: np.uint8,
    DataType.INT64: np.int64,
}
_FROM_ONNX = {
    1: DataType.FLOAT,
    10: DataType.HALF,
    3: DataType.INT8,
    6: DataType.INT32,
    9: DataType.BOOL,
    2: DataType.UINT8,
    7: DataType.INT64,
    16: DataType.BF16,
}


def nptype(dtype):
    return _NP[DataType(dtype)]


def volume(shape):
    return int(np.prod(list(shape))) if len(shape) else 1


class ErrorCode(enum.IntEnum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8


# -- logging -------------------------------------------------------------------


class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = _Severity
    INTERNAL_ERROR = _Severity.INTERNAL_ERROR
    ERROR = _Severity.ERROR
    WARNING = _Severity.WARNING
    INFO = _Severity.INFO
    VERBOSE = _Severity.VERBOSE

    def __init__(self):
        pass

    def log(self, severity, msg):  # pragma: no cover - overridden
        pass


class Logger(ILogger):
    def __init__(self, min_severity=_Severity.WARNING):
        super().__init__()
        self.min_severity = min_severity


# -- network and parser --------------------------------------------------------


class ITensor:
    def __init__(self, name, shape, dtype):
        self.name = name
        self.shape = tuple(shape)
        self.dtype = dtype
        self.is_shape_tensor = False


class INetworkDefinition:
    def __init__(self, flags):
        self.flags = flags
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []
        self.onnx_path = None

    @property
    def num_inputs(self):
        return len(self.inputs)

    @property
    def num_outputs(self):
        return len(self.outputs)

    def get_input(self, i):
        return self.inputs[i]

    def get_output(self, i):
        return self.outputs[i]

    def get_flag(self, flag):
        return (self.flags >> int(flag)) & 1 == 1


class ParserError:
    def __init__(self, code, desc, node, name, op):
        self._code, self._desc, self._node, self._name, self._op = code, desc, node, name, op

    def code(self):
        return self._code

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op

    def file(self):
        return "ModelImporter.cpp"

    def line(self):
        return 0

    def func(self):
        return "importNode"

    def __str__(self):
        return f"In node {self._node} with name: {self._name} and operator: {self._op} ({self._code.name}): {self._desc}"


def _dims(vi):
    out = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(int(d.dim_value) if d.HasField("dim_value") else -1)
    return out


class OnnxParser:
    def __init__(self, network, logger):
        self.network = network
        self.logger = logger
        self.errors: list[ParserError] = []
        STATE["parsers"].append(self)

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return self.errors[i]

    def clear_errors(self):
        self.errors = []

    def parse_from_file(self, path):
        import onnx

        _record("OnnxParser.parse_from_file", path)
        model = onnx.load(path)
        for i, n in enumerate(model.graph.node):
            if n.op_type in STATE["reject_ops"]:
                e = ParserError(
                    ErrorCode.UNSUPPORTED_NODE,
                    f"No importer registered for op: {n.op_type}. Attempting to import as plugin.",
                    i,
                    n.name,
                    n.op_type,
                )
                self.errors.append(e)
                self.logger.log(ILogger.ERROR, str(e))
        if self.errors:
            return False
        inits = {t.name for t in model.graph.initializer}
        self.network.inputs = [
            ITensor(v.name, _dims(v), _FROM_ONNX[v.type.tensor_type.elem_type])
            for v in model.graph.input
            if v.name not in inits
        ]
        self.network.outputs = [
            ITensor(v.name, _dims(v), _FROM_ONNX[v.type.tensor_type.elem_type]) for v in model.graph.output
        ]
        self.network.onnx_path = path
        return True


# -- builder ------------------------------------------------------------------


class IOptimizationProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's parameter names
        _record("IOptimizationProfile.set_shape", name, tuple(min), tuple(opt), tuple(max))
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    def get_shape(self, name):
        return self.shapes[name]


class ITimingCache:
    """Serialized as ``FAKETC|<device>|<entry>;<entry>...``."""

    def __init__(self, device, entries=()):
        self.device = device
        self.entries = set(entries)

    def serialize(self):
        return f"FAKETC|{self.device}|{';'.join(sorted(self.entries))}".encode()

    def combine(self, other, ignore_mismatch):
        _record("ITimingCache.combine", ignore_mismatch=ignore_mismatch)
        if other.device != self.device and not ignore_mismatch:
            return False
        self.entries |= other.entries
        return True


class IBuilderConfig:
    def __init__(self):
        self.flags = set()
        self.pool_limits = {}
        self._builder_optimization_level = 3
        self.hardware_compatibility_level = HardwareCompatibilityLevel.NONE
        self.profiles = []
        self.timing_cache = None
        STATE["configs"].append(self)

    @property
    def builder_optimization_level(self):
        return self._builder_optimization_level

    @builder_optimization_level.setter
    def builder_optimization_level(self, v):
        if not 0 <= v <= 5:
            raise ValueError("builder optimization level must be 0..5")
        self._builder_optimization_level = v

    def set_flag(self, flag):
        _record("IBuilderConfig.set_flag", flag.name)
        self.flags.add(flag.name)

    def clear_flag(self, flag):
        self.flags.discard(flag.name)

    def get_flag(self, flag):
        return flag.name in self.flags

    def set_memory_pool_limit(self, pool, size):
        _record("IBuilderConfig.set_memory_pool_limit", pool.name, size)
        self.pool_limits[pool.name] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob):
        blob = bytes(blob)
        _record("IBuilderConfig.create_timing_cache", len(blob))
        if not blob:
            return ITimingCache(STATE["device"])
        text = blob.decode(errors="replace")
        if not text.startswith("FAKETC|"):
            raise RuntimeError("Invalid timing cache blob")
        _, device, entries = text.split("|", 2)
        return ITimingCache(device, [e for e in entries.split(";") if e])

    def set_timing_cache(self, cache, ignore_mismatch):
        _record("IBuilderConfig.set_timing_cache", ignore_mismatch=ignore_mismatch)
        if cache.device != STATE["device"] and not ignore_mismatch:
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return self.timing_cache


class Builder:
    def __init__(self, logger):
        self.logger = logger
        STATE["builders"].append(self)

    def create_network(self, flags=0):
        _record("Builder.create_network", flags)
        net = INetworkDefinition(flags)
        STATE["networks"].append(net)
        return net

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        _record("Builder.build_serialized_network")
        strongly = network.get_flag(NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        precision_flags = config.flags & {"FP16", "INT8", "BF16", "FP8"}
        if strongly and precision_flags:
            self.logger.log(
                ILogger.ERROR,
                f"Precision flags {sorted(precision_flags)} are not allowed with a strongly typed network",
            )
            return None
        profile = config.profiles[0].shapes if config.profiles else {}
        for t in network.inputs:
            if any(d < 0 for d in t.shape) and t.name not in profile:
                self.logger.log(
                    ILogger.ERROR,
                    f"Network has dynamic or shape inputs, but no optimization "
                    f"profile has been defined for {t.name}.",
                )
                return None
        if STATE["fail_build"]:
            self.logger.log(ILogger.ERROR, "Internal error: could not find any implementation for node X")
            return None
        if config.timing_cache is not None:
            key = hashlib.sha256(open(network.onnx_path, "rb").read()).hexdigest()[:12]
            config.timing_cache.entries.add(f"tactics-{key}")
        plan = {
            "fake_tensorrt_plan": __version__,
            "onnx": network.onnx_path,
            "strongly_typed": strongly,
            "flags": sorted(config.flags),
            "inputs": [[t.name, list(t.shape), int(t.dtype)] for t in network.inputs],
            "outputs": [[t.name, list(t.shape), int(t.dtype)] for t in network.outputs],
            "profile": {k: [list(x) for x in v] for k, v in profile.items()},
        }
        STATE["builds"].append(plan)
        return _HostMemory(json.dumps(plan).encode())


class _HostMemory(bytes):
    """``IHostMemory``: supports the buffer protocol, like TensorRT's."""

    @property
    def nbytes(self):
        return len(self)


# -- runtime ------------------------------------------------------------------


class Runtime:
    def __init__(self, logger):
        self.logger = logger
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, plan):
        data = json.loads(bytes(plan).decode())
        if "VERSION_COMPATIBLE" in data["flags"] and not self.engine_host_code_allowed:
            self.logger.log(
                ILogger.ERROR, "engine_host_code_allowed must be set for version compatible engines"
            )
            return None
        return ICudaEngine(data)


class ICudaEngine:
    def __init__(self, plan):
        self.plan = plan
        self.io = [(n, s, DataType(d), TensorIOMode.INPUT) for n, s, d in plan["inputs"]]
        self.io += [(n, s, DataType(d), TensorIOMode.OUTPUT) for n, s, d in plan["outputs"]]

    @property
    def num_io_tensors(self):
        return len(self.io)

    def get_tensor_name(self, i):
        return self.io[i][0]

    def _find(self, name):
        for row in self.io:
            if row[0] == name:
                return row
        raise KeyError(name)

    def get_tensor_mode(self, name):
        return self._find(name)[3]

    def get_tensor_dtype(self, name):
        return self._find(name)[2]

    def get_tensor_shape(self, name):
        return tuple(self._find(name)[1])

    def create_execution_context(self):
        ctx = IExecutionContext(self)
        STATE["contexts"].append(ctx)
        return ctx


class IExecutionContext:
    def __init__(self, engine):
        self.engine = engine
        self.input_shapes = {}
        self.addresses = {}
        self._session = None
        self._out_shapes = {}

    def _sess(self):
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(self.engine.plan["onnx"], providers=["CPUExecutionProvider"])
        return self._session

    def set_input_shape(self, name, shape):
        prof = self.engine.plan["profile"].get(name)
        if prof is not None:
            lo, _, hi = prof
            if not all(a <= d <= b for a, d, b in zip(lo, shape, hi, strict=False)):
                return False
        self.input_shapes[name] = tuple(shape)
        self._out_shapes = {}
        return True

    def get_tensor_shape(self, name):
        row = self.engine._find(name)
        if row[3] == TensorIOMode.INPUT:
            return self.input_shapes.get(name, tuple(row[1]))
        if not self._out_shapes:
            feeds = {
                n: np.zeros(self.input_shapes[n], dtype=nptype(d))
                for n, _, d, m in self.engine.io
                if m == TensorIOMode.INPUT
            }
            outs = self._sess().run(None, feeds)
            self._out_shapes = {
                o.name: tuple(v.shape) for o, v in zip(self._sess().get_outputs(), outs, strict=False)
            }
        return self._out_shapes[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle):
        _record("IExecutionContext.execute_async_v3", stream_handle)
        feeds = {}
        for n, _, d, m in self.engine.io:
            if m != TensorIOMode.INPUT:
                continue
            dt = np.dtype(nptype(d))
            shape = self.input_shapes[n]
            nbytes = int(np.prod(shape)) * dt.itemsize
            raw = (ctypes.c_uint8 * max(nbytes, 1)).from_address(self.addresses[n])
            feeds[n] = np.frombuffer(bytes(raw)[:nbytes], dtype=dt).reshape(shape)
        outs = self._sess().run(None, feeds)
        for o, v in zip(self._sess().get_outputs(), outs, strict=False):
            v = np.ascontiguousarray(v)
            if STATE["perturb"] and v.dtype.kind == "f":
                v = (v + STATE["perturb"]).astype(v.dtype)
            ctypes.memmove(self.addresses[o.name], v.ctypes.data, v.nbytes)
        return True


class HostMemory:
    """Test-side "device" memory: host buffers whose addresses stand in for device pointers."""

    def __init__(self):
        self.buffers = {}
        self.freed = 0

    def alloc(self, nbytes):
        buf = np.zeros(nbytes, dtype=np.uint8)
        self.buffers[buf.ctypes.data] = buf
        return buf.ctypes.data

    def h2d(self, ptr, arr):
        self.buffers[ptr][: arr.nbytes] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)

    def d2h(self, arr, ptr):
        arr.reshape(-1).view(np.uint8)[:] = self.buffers[ptr][: arr.nbytes]

    def stream(self):
        return 0

    def sync(self):
        pass

    def free(self, ptr):
        self.buffers.pop(ptr, None)
        self.freed += 1

    def close(self):
        self.buffers.clear()


def install(monkeypatch, **config) -> types.ModuleType:
    """Put this stand-in at ``sys.modules["tensorrt"]`` for one test and configure it."""
    module = sys.modules[__name__]
    configure(**config)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


configure()
