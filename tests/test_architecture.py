"""Architecture rules of issue 11, checked on the source with ``ast`` (nothing is imported).

- No module of ``tensorsmith/`` is over ``MAX_LINES`` lines.
- No import cycle between tensorsmith modules. Every ``import``/``from ... import`` counts,
  at module level and inside functions; only imports under ``if TYPE_CHECKING:`` are left out
  (they never run). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
  else to ``pkg`` (its ``__init__``). So a package ``__init__`` importing its own submodules is
  fine, and a submodule importing a name from its package's ``__init__`` that imports the
  submodule back is a cycle.
- No module imports another module's private name (``from tensorsmith.x import _name``,
  relative imports included, or ``mod._name`` on an imported tensorsmith module; dunders such
  as ``__version__`` are public).
- No target name (``"onnx"``, ``"trt"``, ``"tftrt"``) compared as a string (``==``, ``!=``,
  ``in``/``not in`` a literal tuple, list or set) with a target: a variable or attribute named
  ``to`` or ``target``, or ``x.get("to" | "target")`` / ``x["to" | "target"]`` (a report dict's
  field), outside ``tensorsmith/convert/targets/`` (the registry). Targets are asked through the
  registry's ``Target`` properties instead.

  NOT a target comparison (left alone on purpose, the words differ in meaning):
  a *source format* ``"onnx"`` (``fmt == "onnx"``: the format registry's name, another variable);
  the precision step's quantization target (``tensorsmith/precision/``: ``opts.target``,
  ``settings.target``, ``self.target`` are ``"ort"``/``"trt"``, the runtime the Q/DQ layout is
  made for, chosen by the caller from the target's properties); lint's ``--for trt``
  (``tensorsmith/lint/``: the runtime a model is checked against, a lint option, not a job
  target). Those two directories are exempt for the names ``target`` only; ``to`` stays checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "tensorsmith"
MAX_LINES = 600
TARGET_NAMES = {"onnx", "trt", "tftrt"}
REGISTRY = "tensorsmith/convert/targets/"
# directories where a `target` means something else than a job target (see the docstring)
TARGET_WORD_EXEMPT = ("tensorsmith/precision/", "tensorsmith/lint/")


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _rel(name: str) -> str:
    return MODULES[name].relative_to(ROOT).as_posix()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every import node that runs (``if TYPE_CHECKING:`` bodies left out)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _base(module: str, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from`` import names (relative ones resolved)."""
    if node.level == 0:
        return node.module
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level > 1:
        parts = parts[: -(node.level - 1)]
    base = ".".join(parts)
    return f"{base}.{node.module}" if node.module else base


def _edges(module: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every tensorsmith import of ``module``."""
    out = []
    for node in _imports(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tensorsmith" and alias.name in MODULES:
                    out.append((alias.name, "", node.lineno))
            continue
        base = _base(module, node)
        if base is None or base.split(".")[0] != "tensorsmith":
            continue
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in MODULES:
                out.append((sub, "", node.lineno))
            elif base in MODULES:
                out.append((base, alias.name, node.lineno))
    return out


def test_module_size():
    long = {_rel(m): n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_no_import_cycles():
    graph = {m: {t for t, _, _ in _edges(m) if t != m} for m in MODULES}
    cycles = _cycles(graph)
    detail = []
    for comp in cycles:
        members = set(comp)
        edges = {
            f"{_rel(m)}:{line} -> {t}" for m in comp for t, _, line in _edges(m) if t in members and t != m
        }
        detail.append("; ".join(sorted(edges)))
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_cycle_finder_sees_a_cycle():
    # the finder itself: a -> b -> c -> a is one component, d alone is none
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_aliases(module: str) -> dict[str, str]:
    """Local name -> tensorsmith module, for ``from pkg import mod [as x]`` and ``import a.b as x``."""
    out = {}
    for node in _imports(TREES[module]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in MODULES:
                    out[alias.asname] = alias.name
            continue
        base = _base(module, node)
        for alias in node.names:
            if base and f"{base}.{alias.name}" in MODULES:
                out[alias.asname or alias.name] = f"{base}.{alias.name}"
    return out


def test_no_private_imports():
    bad = [
        f"{_rel(m)}:{line}: {name} from {t}"
        for m in MODULES
        for t, name, line in _edges(m)
        if t != m and _private(name)
    ]
    # and a private name read off an imported module (`mod._name`)
    for m in MODULES:
        aliases = _module_aliases(m)
        bad += [
            f"{_rel(m)}:{node.lineno}: {node.value.id}.{node.attr} ({aliases[node.value.id]})"
            for node in ast.walk(TREES[m])
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and aliases[node.value.id] != m
            and _private(node.attr)
        ]
    assert not bad, "imports of other modules' private names:\n" + "\n".join(bad)


def _target_word(node: ast.expr) -> str | None:
    """``to``/``target`` when ``node`` holds a target name, else None."""
    if isinstance(node, ast.Name) and node.id in ("to", "target", "target_name"):
        return node.id
    if isinstance(node, ast.Attribute) and node.attr in ("to", "target"):
        return node.attr
    key = None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
    ):
        key = node.args[0]
    elif isinstance(node, ast.Subscript):
        key = node.slice
    if isinstance(key, ast.Constant) and key.value in ("to", "target"):
        return str(key.value)
    return None


def _target_literals(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in TARGET_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(isinstance(e, ast.Constant) and e.value in TARGET_NAMES for e in node.elts)
    return False


def target_comparisons(tree: ast.AST, rel: str) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, sides[:-1], sides[1:], strict=True):
            if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                continue
            for var, lit in ((left, right), (right, left)):
                word = _target_word(var)
                if word is None or not _target_literals(lit):
                    continue
                if word.startswith("target") and rel.startswith(TARGET_WORD_EXEMPT):
                    continue
                found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_target_string_comparisons():
    bad = [
        hit
        for m in MODULES
        if not (rel := _rel(m)).startswith(REGISTRY)
        for hit in target_comparisons(TREES[m], rel)
    ]
    assert not bad, "target names compared as strings outside the registry:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "src, hits",
    [
        ("if to == 'trt': pass", 1),
        ("if job.to != 'tftrt': pass", 1),
        ("if r.get('target') in ('trt', 'tftrt'): pass", 1),
        ("if 'onnx' == opts['to']: pass", 1),
        ("if fmt == 'onnx': pass", 0),  # a source format, not a target
        ("if to == DEFAULT_TARGET: pass", 0),
    ],
)
def test_target_comparison_finder(src, hits):
    assert len(target_comparisons(ast.parse(src), "tensorsmith/x.py")) == hits


def test_target_word_exemption_is_narrow():
    # a precision/lint `target` is another word; a `to` there is still a job target
    assert target_comparisons(ast.parse("x = opts.target == 'trt'"), "tensorsmith/precision/a.py") == []
    assert len(target_comparisons(ast.parse("x = to == 'trt'"), "tensorsmith/lint/a.py")) == 1
