"""Keras 3 version of the sample CNN (NHWC), mirroring ``torch_cnn.CNN``.

Layers: Conv2D(16,3,same)+BN+ReLU -> Conv2D(32,3,same)+BN+ReLU -> MaxPool2D(2)
-> Dropout(0.25) -> GlobalAveragePooling2D -> Dense(10, name "logits").
BN epsilon is 1e-5 (PyTorch default) so that, after
:func:`load_torch_cnn_weights`, the Keras model computes exactly the same
function as the PyTorch/ONNX cnn on ``x.transpose(0, 2, 3, 1)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["build_keras_cnn", "load_torch_cnn_weights", "randomize_keras_batchnorm"]

BN_EPSILON = 1e-5


def build_keras_cnn(num_classes: int = 10, seed: int = 0, weights: Mapping[str, np.ndarray] | None = None):
    """Build the Keras CNN, input ``[None, 32, 32, 3]`` float32 named "input".

    ``weights``: optional PyTorch-style state dict (numpy arrays, keys as in
    ``torch_cnn.CNN().state_dict()``); when given the Keras model gets exactly
    those weights, otherwise it is randomly initialised (``seed``) with random
    BatchNorm statistics.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(32, 32, 3), name="input", dtype="float32")
    x = layers.Conv2D(16, 3, padding="same", name="conv1")(inp)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(32, 3, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Dropout(0.25, name="dropout")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(num_classes, name="logits")(x)
    model = keras.Model(inp, out, name="cnn")
    if weights is not None:
        load_torch_cnn_weights(model, weights)
    else:
        randomize_keras_batchnorm(model, seed=seed + 1000)
    return model


def randomize_keras_batchnorm(model, seed: int = 0):
    """Random gamma/beta/moving_mean/moving_variance for every BatchNormalization."""
    from keras import layers

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    (rng.random(c) * 1.5 + 0.5).astype("float32"),
                    (rng.standard_normal(c) * 0.2).astype("float32"),
                    (rng.standard_normal(c) * 0.5).astype("float32"),
                    (rng.random(c) * 1.5 + 0.5).astype("float32"),
                ]
            )
    return model


def load_torch_cnn_weights(model, sd: Mapping[str, np.ndarray]):
    """Copy a ``torch_cnn.CNN`` state dict (numpy arrays) into the Keras model."""
    sd = {k: np.asarray(v) for k, v in sd.items()}
    for conv in ("conv1", "conv2"):
        # torch OIHW -> keras HWIO
        model.get_layer(conv).set_weights([sd[f"{conv}.weight"].transpose(2, 3, 1, 0), sd[f"{conv}.bias"]])
    for bn in ("bn1", "bn2"):
        model.get_layer(bn).set_weights(
            [sd[f"{bn}.weight"], sd[f"{bn}.bias"], sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"]]
        )
    model.get_layer("logits").set_weights([sd["fc.weight"].T, sd["fc.bias"]])
    return model
