"""Load YAML with ``yaml.safe_load`` semantics, remembering where every value came from.

``load(path)`` returns the plain data (exactly what ``yaml.safe_load`` builds: the
``SafeLoader`` subclass below only adds bookkeeping) and a ``Lines`` index that
maps a path into the data (``("models", 0, "path")``) to its line in the file, so
schema errors can say ``recipe.yaml:12: models[0].path: ...``.

Two things ``safe_load`` accepts are refused, because in a recipe they are always
mistakes: a key given twice in one mapping (the first value would be silently
dropped), and a file with several documents.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tensorsmith.errors import UsageError

PathKey = tuple  # ("models", 0, "path")


class _LineLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that keeps the composed node tree to index lines."""


class Lines:
    """Line numbers (1-based) of values and keys, by their path in the data."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[PathKey, int] = {}
        self.keys: dict[PathKey, int] = {}

    def line(self, path: Iterable, *, key: bool = False) -> int | None:
        """Line of ``path``; the key's line when ``key`` (for unknown/missing keys),
        else the value's. Falls back to the nearest enclosing value that is known."""
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while path:
            if path in self.values:
                return self.values[path]
            if path in self.keys:
                return self.keys[path]
            path = path[:-1]
        return self.values.get((), 1)

    def where(self, path: Iterable, *, key: bool = False) -> str:
        """``file:line`` for ``path``."""
        line = self.line(path, key=key)
        return f"{self.file}:{line}" if line else self.file


def format_path(path: Iterable) -> str:
    """``("models", 0, "path")`` -> ``models[0].path``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _index(loader: _LineLoader, node: yaml.Node, path: PathKey, lines: Lines, seen: set[int]) -> None:
    lines.values.setdefault(path, node.start_mark.line + 1)
    if id(node) in seen:  # an alias to an anchored node: already indexed elsewhere
        return
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        keys_here: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # `<<: *base` merges keys; index them under this mapping
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    if isinstance(src, yaml.MappingNode):
                        for k, v in src.value:
                            _index_key(loader, k, v, path, lines, seen, None)
                continue
            _index_key(loader, key_node, value_node, path, lines, seen, keys_here)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(loader, item, (*path, i), lines, seen)


def _index_key(loader, key_node, value_node, path, lines: Lines, seen, keys_here: dict | None) -> None:
    if not isinstance(key_node, yaml.ScalarNode):
        return
    key = loader.construct_object(key_node, deep=True)
    line = key_node.start_mark.line + 1
    if keys_here is not None:
        try:
            hash(key)
        except TypeError:
            return
        if key in keys_here:
            raise UsageError(
                f"{lines.file}:{line}: {format_path((*path, key)) or key}: key given twice "
                f"(first on line {keys_here[key]})"
            )
        keys_here[key] = line
    lines.keys.setdefault((*path, key), line)
    _index(loader, value_node, (*path, key), lines, seen)


def loads(text: str, file: str = "<recipe>") -> tuple[Any, Lines]:
    """Parse ``text`` as ``yaml.safe_load`` would; return ``(data, lines)``."""
    lines = Lines(file)
    loader = _LineLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.composer.ComposerError as exc:
            if "expected a single document" in str(exc):
                mark = exc.problem_mark
                raise UsageError(
                    f"{file}:{mark.line + 1 if mark else '?'}: a recipe is one YAML document; found a second one"
                ) from None
            raise
        if node is None:
            return None, lines
        _index(loader, node, (), lines, set())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        context = f" ({' '.join(exc.context.split())})" if exc.context and exc.problem else ""
        raise UsageError(f"{where}: invalid YAML: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{file}: invalid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    return data, lines


def load(path: str | os.PathLike) -> tuple[Any, Lines]:
    """Read and parse a recipe file (UTF-8); ``UsageError`` when it cannot be read."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such recipe file")
    if p.is_dir():
        raise UsageError(f"{p}: is a directory, expected a recipe .yaml file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{p}: not a UTF-8 text file (byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"{p}: cannot read ({exc.strerror or exc})") from None
    return loads(text, str(path))
