"""Source formats, one module each, registered in ``tensorsmith.convert.FRONTENDS``.

Every format module provides ``load(path, options) -> Imported`` and
``inspect(path, fmt=None) -> dict`` (``tensorsmith.convert.frontend`` defines
both types). What the TensorFlow formats share is in ``tf_common``, what the
PyTorch ones share in ``torch_common``; nothing here imports TensorFlow or
PyTorch until a format module's ``load``/``inspect`` runs.
"""
