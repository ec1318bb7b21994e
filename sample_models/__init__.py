"""Small, deterministic sample models used by tensorsmith tests.

Regenerate with ``python sample_models/build.py`` (see build.py).
"""
