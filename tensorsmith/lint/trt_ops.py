"""Which ONNX operators TensorRT's ONNX parser (onnx-tensorrt) imports, per TensorRT version.

Data only; ``tensorsmith.lint.trt`` reads it.

Source of the table below: ``docs/operators.md`` of github.com/onnx/onnx-tensorrt,
the version headed "TensorRT 10.15 supports operators in the inclusive range of
opset 9 to opset 24" (the newest operators.md we could read, looked up through a
stored copy of the repository in 2026). Each line is ``Op: TYPES`` for a "Y" row
(the "Supported Types" column, BF16 written as BF16) and ``Op: N`` for an "N" row;
``| ...`` after the types is the "Restrictions" column, shortened.

Version differences inside 10.x come from the onnx-tensorrt ``docs/Changelog.md``
and NVIDIA/TensorRT ``CHANGELOG.md``: DeformConv added in 10.1; BlackmanWindow,
HammingWindow, HannWindow in 10.4; STFT in 10.5; Attention in 10.14;
RotaryEmbedding, RMSNormalization, TensorScatter in 10.15. The 10.0 operators.md
says opset 9 to 20; 10.15 says 9 to 24.

TensorRT 11: we could not read an 11.x operators.md. The 11.x table is the 10.15
one plus what the release notes name: Swish (TensorRT 11.0 release: "Parsers:
Added support for Swish operator") and DFT (11.2.1 release notes: "ONNX DFT
operator support: Adds a cuFFT-based plugin"). Treat 11.x answers as less certain
than 10.x ones; ``tensorsmith lint --json`` reports which table was used.
"""

from __future__ import annotations

SOURCE = (
    "onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15, opset 9-24) + changelogs; see module docstring"
)

# Newest version each table describes; ``lint --trt-version 10.x`` means 10.15.
LATEST = {10: (10, 15), 11: (11, 2)}

# (major, minor) -> (lowest, highest) default-domain opset the parser documents.
OPSET_RANGE = {(10, 0): (9, 20), (10, 15): (9, 24), (11, 0): (9, 24)}

# op -> first (major, minor) that imports it, for ops added after 10.0.
ADDED_IN = {
    "DeformConv": (10, 1),
    "BlackmanWindow": (10, 4),
    "HammingWindow": (10, 4),
    "HannWindow": (10, 4),
    "STFT": (10, 5),
    "Attention": (10, 14),
    "RotaryEmbedding": (10, 15),
    "RMSNormalization": (10, 15),
    "TensorScatter": (10, 15),
    "Swish": (11, 0),
    "DFT": (11, 2),
}

_F = "FP32 FP16 BF16"
_FI = "FP32 FP16 BF16 INT32 INT64"
_FIB = "FP32 FP16 BF16 INT32 INT64 BOOL"
_REDUCE = f"{_FI} | `axes` must be an initializer"

_TABLE = f"""
Abs: {_FI}
Acos: {_F}
Acosh: {_F}
Add: {_FI}
AffineGrid: N
And: BOOL
ArgMax: {_FI}
ArgMin: {_FI}
Asin: {_F}
Asinh: {_F}
Atan: {_F}
Atanh: {_F}
Attention: {_F} INT8 FP8 | Q, K, V and attn_mask must be 4D; past_key/past_value inputs and present_key/present_value outputs unsupported
AveragePool: {_F} | 2D or 3D pooling only; dilations must be empty or all ones
BatchNormalization: {_F}
Bernoulli: N
BitShift: N
BitwiseAnd: N
BitwiseNot: N
BitwiseOr: N
BitwiseXor: N
BlackmanWindow: FP32 FP16
Cast: {_FI} UINT8 BOOL
CastLike: {_FI} UINT8 BOOL
Ceil: {_F}
Col2Im: N
Celu: {_F}
CenterCropPad: N
Clip: {_F}
Compress: N
Concat: {_FIB}
ConcatFromSequence: N
Constant: {_F} FP8 FP4 INT4 INT32 INT64 BOOL | sparse_value, value_string and value_strings unsupported
ConstantOfShape: {_F} FP8 FP4 INT4 INT32 INT64 BOOL
Conv: {_F}
ConvInteger: N
ConvTranspose: {_F}
Cos: {_F}
Cosh: {_F}
CumSum: {_F} | `axis` must be a build-time constant
DFT: N
DeformConv: FP32 FP16 | 1D or 2D spatial input; begin and end pads equal
DepthToSpace: {_FI}
DequantizeLinear: INT8 FP8 FP4 INT4 | `x_zero_point` must be zero
Det: N
Div: {_FI}
Dropout: {_F} | `is_training` must be an initializer and False
DynamicQuantizeLinear: N
Einsum: {_F}
Elu: {_F}
Equal: {_FI}
Erf: {_F}
Exp: {_F}
Expand: {_FIB}
EyeLike: {_FIB} | input must have static dimensions
Flatten: {_FIB}
Floor: {_F}
Gather: {_FIB}
GatherElements: {_FIB}
GatherND: {_FIB}
Gelu: {_F} INT8 INT32 INT64
Gemm: {_F}
GlobalAveragePool: {_F}
GlobalLpPool: {_F}
GlobalMaxPool: {_F}
Greater: {_FI}
GreaterOrEqual: {_FI}
GridSample: FP32 FP16 | 4D input
GroupNormalization: {_F}
GRU: {_F} | bidirectional: same activations both ways
HammingWindow: FP32 FP16
HannWindow: FP32 FP16
HardSigmoid: {_F}
HardSwish: {_F}
Hardmax: {_F} | `axis` dimension must be a build-time constant
Identity: {_FIB}
If: {_FIB} | both branches' outputs must have the same rank and different names
ImageScaler: {_F}
ImageDecoder: N
InstanceNormalization: {_F}
IsInf: {_F}
IsNaN: {_FI}
LayerNormalization: {_F} | only the first output Y is supported
LeakyRelu: {_F}
Less: {_FI}
LessOrEqual: {_FI}
Log: {_F}
LogSoftmax: {_F}
Loop: {_FIB} | scan output length cannot be dynamic
LRN: {_F}
LSTM: {_F} | input_forget must be 0; layout must be 0
LpNormalization: {_F}
LpPool: {_F} | dilations must be empty or all ones
MatMul: {_F}
MatMulInteger: N
Max: {_FI}
MaxPool: {_F} | 2D or 3D pooling only; Indices output unsupported; dilations must be empty or all ones
MaxRoiPool: N
MaxUnpool: N
Mean: {_F} FP8 INT32 INT64
MeanVarianceNormalization: {_F}
MelWeightMatrix: N
Min: {_FI}
Mish: FP32 FP16
Mod: {_FI}
Mul: {_FI}
Multinomial: N
Neg: {_FI}
NegativeLogLikelihoodLoss: N
NonMaxSuppression: FP32 FP16
NonZero: FP32 FP16
Not: BOOL
OneHot: {_FIB} | `depth` must be a build-time constant
Optional: N
OptionalGetElement: N
OptionalHasElement: N
Or: BOOL
Pad: {_FI}
ParametricSoftplus: {_F}
Pow: {_FI}
PRelu: {_F}
QLinearConv: N
QLinearMatMul: N
QuantizeLinear: {_F} | `y_zero_point` must be 0
RandomNormal: {_F}
RandomNormalLike: {_F}
RandomUniform: {_F}
RandomUniformLike: {_F}
Range: {_FI}
Reciprocal: {_F}
ReduceL1: {_REDUCE}
ReduceL2: {_REDUCE}
ReduceLogSum: {_REDUCE}
ReduceLogSumExp: {_REDUCE}
ReduceMax: {_REDUCE}
ReduceMean: {_REDUCE}
ReduceMin: {_REDUCE}
ReduceProd: {_REDUCE}
ReduceSum: {_REDUCE}
ReduceSumSquare: {_REDUCE}
RegexFullMatch: N
Relu: {_FI}
Reshape: {_FIB}
Resize: {_F} | modes nearest/linear; antialias unsupported
ReverseSequence: {_FIB}
RMSNormalization: {_F}
RNN: {_F}
RoiAlign: FP32 FP16
RotaryEmbedding: {_F} | `position_ids` must be INT64
Round: {_F}
STFT: FP32 | frame_step and window must be initializers; real input
ScaledTanh: {_F}
Scan: {_F}
Scatter: {_FI}
ScatterElements: {_FI}
ScatterND: {_FI} | reduction other than none unsupported
Selu: {_F}
SequenceAt: N
SequenceConstruct: N
SequenceEmpty: N
SequenceErase: N
SequenceInsert: N
SequenceLength: N
SequenceMap: N
Shape: {_FIB}
Shrink: {_FI}
Sigmoid: {_F}
Sign: {_FI}
Sin: {_F}
Sinh: {_F}
Size: {_FIB}
Slice: {_FIB}
Softmax: {_F}
SoftmaxCrossEntropyLoss: N
Softplus: {_F}
Softsign: {_F}
SpaceToDepth: {_FI}
Split: {_FIB}
SplitToSequence: N
Sqrt: {_F}
Squeeze: {_FIB} | `axes` must be resolvable to a constant
StringConcat: N
StringNormalizer: N
StringSplit: N
Sub: {_FI}
Sum: {_FI}
Tan: {_F}
Tanh: {_F}
TensorScatter: FP32 FP16 BF16 INT32 | past_cache and update 4D; axis -2
TfIdfVectorizer: N
ThresholdedRelu: {_F}
Tile: {_FIB}
TopK: {_FI} | `sorted` must be 1; K < 3840
Transpose: {_FIB}
Trilu: {_FIB}
Unique: N
Unsqueeze: {_FIB} | `axes` must be resolvable to a constant
Upsample: {_F}
Where: {_FIB}
Xor: BOOL
"""

# Added by the 11.x release notes (see docstring): not in the 10.15 table, or "N" there.
_TABLE_11_EXTRA = f"""
Swish: {_F}
DFT: FP32 FP16 | plugin-based (cuFFT)
"""


def _parse(text: str) -> tuple[dict[str, tuple[str, ...]], set[str], dict[str, str]]:
    supported: dict[str, tuple[str, ...]] = {}
    unsupported: set[str] = set()
    restrictions: dict[str, str] = {}
    for line in text.strip().splitlines():
        op, _, rest = line.partition(":")
        type_text, _, restriction = rest.partition("|")
        types = type_text.split()
        if types == ["N"]:
            unsupported.add(op.strip())
            continue
        supported[op.strip()] = tuple(types)
        if restriction.strip():
            restrictions[op.strip()] = restriction.strip()
    return supported, unsupported, restrictions


SUPPORTED_10, UNSUPPORTED_10, RESTRICTIONS = _parse(_TABLE)
_extra, _, _extra_restrictions = _parse(_TABLE_11_EXTRA)
SUPPORTED_11 = {**SUPPORTED_10, **_extra}
UNSUPPORTED_11 = UNSUPPORTED_10 - set(_extra)
RESTRICTIONS_11 = {**RESTRICTIONS, **_extra_restrictions}


def table_for(version: tuple[int, int]) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """(supported op -> types, explicitly unsupported ops) for a TensorRT (major, minor)."""
    major = version[0]
    supported = dict(SUPPORTED_11 if major >= 11 else SUPPORTED_10)
    unsupported = set(UNSUPPORTED_11 if major >= 11 else UNSUPPORTED_10)
    for op, since in ADDED_IN.items():
        if version < since and op in supported:
            del supported[op]
            unsupported.add(op)
    return supported, unsupported


def opset_range(version: tuple[int, int]) -> tuple[int, int, int]:
    """(lowest, highest surely imported, highest possibly imported) default-domain opset.

    For a version between two documented ones (10.1 ... 10.14) the two highs differ:
    10.0 documents up to opset 20, 10.15 up to 24.
    """
    if version in OPSET_RANGE:
        lo, hi = OPSET_RANGE[version]
        return lo, hi, hi
    if version[0] >= 11:
        lo, hi = OPSET_RANGE[(11, 0)]
        return lo, hi, hi
    if version >= (10, 15):
        lo, hi = OPSET_RANGE[(10, 15)]
        return lo, hi, hi
    lo, sure = OPSET_RANGE[(10, 0)]
    return lo, sure, OPSET_RANGE[(10, 15)][1]
