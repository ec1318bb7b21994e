"""PyTorch definitions of the sample models written by ``sample_models/build.py``.

Every model here is randomly initialised (fixed seed) and every BatchNorm gets
random running statistics / affine params (see :func:`randomize_batchnorm`) so
that BN folding is numerically meaningful.

``sample_models.torch_cnn:build_cnn`` + ``frameworks/cnn_state_dict.pth`` gives
the same network as ``cnn.onnx`` and the other ``frameworks/cnn*`` files.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "CNN",
    "BasicBlock",
    "MobileNetBlock",
    "ResNetTiny",
    "SqueezeExcite",
    "TransformerBlock",
    "build_cnn",
    "build_mobilenet_block",
    "build_resblock",
    "build_transformer",
    "randomize_batchnorm",
]


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random, non-trivial running stats and affine params.

    LayerNorm affine params are randomised too (otherwise all LayerNorms share
    identical ones/zeros tensors, which the exporter de-duplicates into Identity
    nodes).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 1.0 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return module


# --------------------------------------------------------------------------- cnn
class CNN(nn.Module):
    """Conv+BN+ReLU -> Conv+BN+ReLU -> MaxPool -> Dropout -> GAP -> Linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(0.25)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.pool(x)
        x = self.dropout(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# ---------------------------------------------------------------------- resblock
class BasicBlock(nn.Module):
    """ResNet basic block; adds a 1x1 conv + BN downsample when shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNetTiny(nn.Module):
    """Stem conv+BN+ReLU, two basic blocks (second downsamples), GAP, Linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# ------------------------------------------------------------------- transformer
class TransformerBlock(nn.Module):
    """Pre-LN transformer encoder block with hand-written multi-head attention.

    Written with nn.Linear / matmul / softmax so the ONNX export is plain ops
    (MatMul, Add, Reshape, Transpose, Softmax, LayerNormalization, Gelu/Erf...).
    """

    def __init__(self, dim: int = 64, heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.1):
        super().__init__()
        assert dim % heads == 0
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.ln1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)
        self.proj_drop = nn.Dropout(dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)
        self.mlp_drop = nn.Dropout(dropout)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        h = self.ln1(x)
        q, k, v = self._split(self.q(h)), self._split(self.k(h)), self._split(self.v(h))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        attn = self.attn_drop(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(attn, v).transpose(1, 2).reshape(b, s, d)
        x = x + self.proj_drop(self.proj(ctx))
        x = x + self.mlp_drop(self.fc2(self.act(self.fc1(self.ln2(x)))))
        return x


# --------------------------------------------------------------------- mobilenet
class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(F.relu(self.fc1(self.pool(x)))))
        return x * s


class MobileNetBlock(nn.Module):
    """Stem conv+BN+Hardswish, two depthwise-separable blocks (one with SE), classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.Hardswish(),
        )
        # depthwise separable #1 (ReLU6)
        self.dw1 = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU6(),
        )
        self.pw1 = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        # depthwise separable #2 (Hardswish + squeeze-excite)
        self.dw2 = nn.Sequential(
            nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32, bias=False),
            nn.BatchNorm2d(32),
            nn.Hardswish(),
        )
        self.se = SqueezeExcite(32, 8)
        self.pw2 = nn.Sequential(nn.Conv2d(32, 48, 1, bias=False), nn.BatchNorm2d(48), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(48, 64),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw1(self.dw1(self.stem(x)))
        x = self.pw2(self.se(self.dw2(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(x)


# ---------------------------------------------------------------------- factories
def _build(cls, seed: int, **kw) -> nn.Module:
    torch.manual_seed(seed)
    model = cls(**kw)
    randomize_batchnorm(model, seed=seed + 1000)
    return model.eval()


def build_cnn(num_classes: int = 10, seed: int = 0) -> CNN:
    """The sample CNN in eval mode (deterministic random weights for ``seed``).

    Load ``frameworks/cnn_state_dict.pth`` into it to get the committed weights.
    """
    return _build(CNN, seed, num_classes=num_classes)


def build_resblock(num_classes: int = 10, seed: int = 1) -> ResNetTiny:
    return _build(ResNetTiny, seed, num_classes=num_classes)


def build_transformer(dim: int = 64, heads: int = 4, seed: int = 2) -> TransformerBlock:
    return _build(TransformerBlock, seed, dim=dim, heads=heads)


def build_mobilenet_block(num_classes: int = 10, seed: int = 3) -> MobileNetBlock:
    return _build(MobileNetBlock, seed, num_classes=num_classes)
