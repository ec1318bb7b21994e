"""The TensorRT Python API we call, checked against NVIDIA's real bindings.

``tensorrt-cu12-bindings`` wheels are on PyPI (about 1.3 MB each; the libraries are not
needed): the compiled module's string table lists every class, method, property and enum
member name pybind11 registers, and the wheel's Python files add the rest (``nptype``,
``volume``...). For each version the backend claims (the oldest 10.x it documents, the
newest 10.x, the newest 11.x):

* every ``tensorrt`` name used under ``tensorsmith/convert`` (attribute chains on the
  module alias, found with ``ast``; enum members reached by ``getattr`` with a computed
  name count through the UPPER_CASE string constants of that module) exists, except
  where the code guards the name (``hasattr``/``getattr`` with a default on it, a
  ``hasattr`` on the same module attribute in the function, or a version comparison
  around the name);
* ``tests/fake_tensorrt.py`` configured as that version exposes only names that exist
  there (its own helpers are listed in ``FAKE_HELPERS``).

Downloads go to the third-party cache (tests/thirdparty.py); offline the test skips.
"""

from __future__ import annotations

import ast
import enum
import inspect
import re
import types
import zipfile
from pathlib import Path

import pytest

from tests import fake_tensorrt
from tests import thirdparty as tp

pytestmark = pytest.mark.thirdparty

REPO = Path(__file__).resolve().parents[1]
# oldest documented, newest 10.x, newest 11.x (pip index versions tensorrt-cu12-bindings)
VERSIONS = ("10.8.0.43", "10.16.1.11", "11.4.0.106")
_TABLES: dict[str, tuple[set[str], bytes]] = {}


def _table(version: str) -> tuple[set[str], bytes]:
    if version not in _TABLES:
        try:
            wheel = tp._wheel(f"tensorrt-cu12-bindings=={version}", tp.cache_root(), 300.0)
        except tp.ThirdPartyUnavailable as exc:
            pytest.skip(f"tensorrt-cu12-bindings {version}: {exc}")
        names: set[str] = set()
        blob = b""
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                if member.endswith(".so"):
                    blob += z.read(member)
                elif member.endswith(".py"):
                    tree = ast.parse(z.read(member))
                    for node in ast.walk(tree):
                        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                            names.add(node.name)
                        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                            names.add(node.id)
        names |= {m.decode() for m in re.findall(rb"[A-Za-z_][A-Za-z0-9_]*(?=\x00)", blob)}
        _TABLES[version] = (names, blob)
    return _TABLES[version]


def exists(version: str, name: str) -> bool:
    names, blob = _table(version)
    # a NUL-terminated string, or its tail (the linker merges "Builder" into "...Builder")
    return name in names or (name.encode() + b"\0") in blob


# -- the names the backend uses ---------------------------------------------------


def _is_trt(node: ast.AST) -> bool:
    """The module alias: ``trt`` (``trt = import_tensorrt()``) or ``self.trt``."""
    return (isinstance(node, ast.Name) and node.id == "trt") or (
        isinstance(node, ast.Attribute) and node.attr == "trt" and isinstance(node.value, ast.Name)
    )


def _chain(node: ast.AST) -> list[str] | None:
    """``trt.A.B`` -> ["A", "B"]; None when the chain does not start at the alias."""
    parts = []
    while isinstance(node, ast.Attribute) and not _is_trt(node):
        parts.append(node.attr)
        node = node.value
    return list(reversed(parts)) if _is_trt(node) and parts else None


def _version_test(node: ast.AST) -> bool:
    """A comparison on the TensorRT version (``major >= 11``, ``trt.__version__ ...``)."""
    return isinstance(node, ast.Compare) and bool(re.search(r"version|major", ast.unparse(node), re.I))


class _Scan(ast.NodeVisitor):
    """tensorrt names in one module, each with whether the code guards it."""

    def __init__(self, used: dict[str, bool]):
        self.used = used
        self.fn_stack: list[ast.AST] = []
        self.version_scopes = 0  # inside a function or ``if`` that compares the version
        self.hasattr_fns: set[int] = set()
        self.alias_stack = [True]  # module level: ``trt`` is the module unless rebound

    def add(self, name: str, guarded: bool) -> None:
        self.used[name] = self.used.get(name, True) and guarded

    def _module_here(self, node: ast.AST) -> bool:
        """Whether a chain starting at ``node`` is on the tensorrt module here: ``self.trt``,
        or a ``trt`` not bound to something else in this function (``trt = TrtOptions(...)``)."""
        root = node
        while isinstance(root, ast.Attribute) and not _is_trt(root):
            root = root.value
        return not isinstance(root, ast.Name) or self.alias_stack[-1]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        bound = [
            n.value
            for n in ast.walk(node)
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "trt" for t in n.targets)
        ]
        self.alias_stack.append(all("tensorrt" in ast.unparse(v) for v in bound) and self.alias_stack[-1])
        compares = any(_version_test(n) for n in ast.walk(node))
        if any(
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)
            and n.func.id == "hasattr"
            and n.args
            and _chain(n.args[0]) is not None
            for n in ast.walk(node)
        ):
            self.hasattr_fns.add(id(node))
        self.fn_stack.append(node)
        self.version_scopes += compares
        self.generic_visit(node)
        self.version_scopes -= compares
        self.fn_stack.pop()
        self.alias_stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        compares = _version_test(node.test)
        self.version_scopes += compares
        self.generic_visit(node)
        self.version_scopes -= compares

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node)
        if chain and not self._module_here(node):
            return
        if chain:
            for name in chain:
                self.add(name, False)
            return
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        # enum members named by string: counted when a computed getattr on the module exists
        if isinstance(node.value, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value):
            self.constants.append((node.value, self.version_scopes > 0))

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2:
            if _chain(node.args[0]) is not None and self._module_here(node.args[0]):
                target = node.args[1]
                fn = self.fn_stack[-1] if self.fn_stack else None
                guarded = (
                    node.func.id == "hasattr"
                    or len(node.args) == 3
                    or (fn is not None and id(fn) in self.hasattr_fns)
                )
                if isinstance(target, ast.Constant) and isinstance(target.value, str):
                    self.add(target.value, guarded or self.version_scopes > 0)
                else:
                    self.computed.append(guarded)
        self.generic_visit(node)

    def scan(self, tree: ast.AST) -> None:
        self.constants: list[tuple[str, bool]] = []
        self.computed: list[bool] = []
        self.visit(tree)
        # strings naming this module's own globals (``__all__``) are not tensorrt names
        own = {
            t.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        self.own = own
        self.constants = [(n, g) for n, g in self.constants if n not in own]


def used_names() -> dict[str, bool]:
    """Every tensorrt name used under tensorsmith/convert -> whether the code guards it.

    Enum members reached by ``getattr(trt.X, name)`` with a computed ``name`` are the
    UPPER_CASE string constants of the whole tree (they may live in another module, e.g.
    an options table); such a name counts as guarded when it sits in a version
    comparison or when some computed lookup has a fallback (a default, a ``hasattr``):
    then it need only exist in one supported version, which still catches a misspelt
    member."""
    used: dict[str, bool] = {}
    constants: list[tuple[str, bool]] = []
    computed: list[bool] = []
    globals_: set[str] = set()
    for path in sorted((REPO / "tensorsmith" / "convert").rglob("*.py")):
        scan = _Scan(used)
        before = len(used)
        scan.scan(ast.parse(path.read_text(), str(path)))
        globals_ |= scan.own
        if len(used) > before or scan.computed or "trt" in path.parts or path.stem.startswith("trt"):
            constants += scan.constants  # only the TensorRT backend's own modules
        computed += scan.computed
    constants = [(n, g) for n, g in constants if n not in globals_]
    if computed:
        fallback = any(computed)
        for name, guarded in constants:
            used[name] = used.get(name, True) and (guarded or fallback)
    return used


def test_the_scan_finds_the_backend_names():
    used = used_names()
    # names the backend cannot work without: if the scan misses these it is broken
    for name in (
        "Builder",
        "OnnxParser",
        "ILogger",
        "NetworkDefinitionCreationFlag",
        "BuilderFlag",
        "Runtime",
    ):
        assert name in used, sorted(used)


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_uses_only_names_of_each_supported_version(version):
    used = used_names()
    # a guarded name need only exist in some supported version; the others in every one
    missing = sorted(n for n, guarded in used.items() if not guarded and not exists(version, n))
    assert not missing, f"tensorrt {version} has no {missing}"
    unknown = sorted(n for n, guarded in used.items() if guarded and not any(exists(v, n) for v in VERSIONS))
    assert not unknown, f"no supported tensorrt has {unknown}"


def _fake_names() -> list[str]:
    out = []
    for name, obj in vars(fake_tensorrt).items():
        if name.startswith("_") or name in fake_tensorrt.FAKE_HELPERS or isinstance(obj, types.ModuleType):
            continue
        if name == "annotations" or (
            callable(obj) and getattr(obj, "__module__", "") not in (fake_tensorrt.__name__, "enum")
        ):
            continue  # imported helpers (from __future__, numpy)
        if (
            inspect.isclass(obj)
            and getattr(obj, "__module__", "") not in (fake_tensorrt.__name__,)
            and not issubclass(obj, enum.Enum)
        ):
            continue
        out.append(name)
        if inspect.isclass(obj):
            members = obj.__members__ if issubclass(obj, enum.Enum) else vars(obj)
            out += [m for m in members if not m.startswith("_")]
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_fake_tensorrt_exposes_only_real_names(version):
    fake_tensorrt.configure(version=version)
    try:
        names = _fake_names()
        assert "EXPLICIT_BATCH" in names or version.startswith("11")
        missing = sorted({n for n in names if not exists(version, n)})
        assert not missing, f"the stand-in, as tensorrt {version}, has names {version} lacks: {missing}"
    finally:
        fake_tensorrt.configure()


def test_versions_differ_where_we_know_they_do():
    """The check can fail: EXPLICIT_BATCH is gone in 11.x, SAME_COMPUTE_CAPABILITY is not in 10.8."""
    assert exists("10.8.0.43", "EXPLICIT_BATCH") and not exists("11.4.0.106", "EXPLICIT_BATCH")
    assert not exists("10.8.0.43", "SAME_COMPUTE_CAPABILITY") and exists(
        "10.16.1.11", "SAME_COMPUTE_CAPABILITY"
    )
