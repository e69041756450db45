"""The layers import downwards only: backends -> ops; nn -> ops; variants -> nn; the engine ->
the variants' interface; the CLI on top (docs/CONTRIBUTING.md, "Layers").

Two kinds of check:
* one subprocess per layer imports the layer (the package and every module in it) alone and
  asserts that nothing of a layer above it is in ``sys.modules``. A subprocess, because the
  test session has imported everything already;
* a static pass with ``ast`` over fastgan/ (and the top-level kernels/, installed as
  fastgan.kernels): no module-level import cycle, and no import of a layer above, not even one
  deferred inside a function (a deferred import hides a cycle from the first check).
"""
from __future__ import annotations

import ast
import functools
import json
import os
import pathlib
import subprocess
import sys
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Importing the key loads none of the values. A value "x." forbids x's submodules only: the
# registry may read the catalogue fastgan/backends/__init__.py (names, no torch), never a backend.
ABOVE_OPS = ("fastgan.nn", "fastgan.variants", "fastgan.engine", "fastgan.cli")
FORBIDDEN: Dict[str, Tuple[str, ...]] = {
    "fastgan.ops": ("fastgan.backends.", "fastgan.kernels", "triton") + ABOVE_OPS,
    "fastgan.backends.reference": ABOVE_OPS + ("fastgan.quality",),
    "fastgan.backends.triton": ABOVE_OPS + ("fastgan.quality",),
    "fastgan.backends.cuda": ABOVE_OPS + ("fastgan.quality",),
    "fastgan.nn": ("fastgan.backends.", "fastgan.variants", "fastgan.engine", "fastgan.cli"),
    "fastgan.variants": ("fastgan.engine", "fastgan.cli", "fastgan.quality"),
    "fastgan.engine": ("fastgan.cli",),
    "fastgan.quality": ("fastgan.engine", "fastgan.cli"),
    "fastgan.kernels": ("fastgan.ops", "fastgan.backends"),
}
# Which work package a check waits for (see the module docstring); absent: holds today.
# ... for the static pass, which also sees ops/__init__.py's deferred backend loaders
# Backends whose import may fail on a machine without their toolchain: skipped, not failed.
OPTIONAL = {"fastgan.backends.triton": "triton", "fastgan.backends.cuda": "fastgan._C"}

# The engine drives a variant through its interface only: it may import these variant modules.
ENGINE_VARIANT_MODULES = {"fastgan.variants", "fastgan.variants.base",
                          "fastgan.variants.sampling"}

_PROBE = r"""
import importlib, importlib.util, json, os, pkgutil, sys
name, kernels = sys.argv[1], sys.argv[2]
if kernels:  # the checkout's kernels/ as fastgan.kernels, as setup.py's package_dir maps it
    class _Kernels:
        @staticmethod
        def find_spec(fullname, path=None, target=None):
            if fullname != "fastgan.kernels":
                return None
            return importlib.util.spec_from_file_location(
                fullname, os.path.join(kernels, "__init__.py"),
                submodule_search_locations=[kernels])
    sys.meta_path.insert(0, _Kernels)
try:
    pkg = importlib.import_module(name)
except ImportError as e:
    print(json.dumps({"import_error": f"{type(e).__name__}: {e}"}))
    raise SystemExit(0)
if hasattr(pkg, "__path__"):
    for info in pkgutil.walk_packages(pkg.__path__, name + "."):
        if info.name.rsplit(".", 1)[-1] != "__main__":   # __main__ runs a command
            importlib.import_module(info.name)
print(json.dumps({"modules": sorted(sys.modules), "file": getattr(pkg, "__file__", None)}))
"""


def _matches(module: str, forbidden: str) -> bool:
    if forbidden.endswith("."):
        return module.startswith(forbidden)
    return module == forbidden or module.startswith(forbidden + ".")


@pytest.mark.parametrize("layer", list(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    # cwd is not the repo: there ``import kernels`` would reach the folder itself, not the package
    # An editable install made before kernels/ moved may map fastgan.kernels elsewhere: the
    # probe imports this checkout's kernels/ under that name itself.
    kernels = REPO / "kernels"
    kernels = str(kernels) if (kernels / "__init__.py").exists() else ""
    proc = subprocess.run([sys.executable, "-c", _PROBE, layer, kernels], cwd=str(REPO / "tests"),
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"importing {layer} failed:\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "import_error" in out:
        if layer in OPTIONAL and OPTIONAL[layer] in out["import_error"]:
            pytest.skip(f"{layer} is not usable here: {out['import_error']}")
        pytest.fail(f"{layer} does not import: {out['import_error']}")
    loaded = [m for m in out["modules"] for f in FORBIDDEN[layer] if _matches(m, f)]
    assert not loaded, f"importing {layer} alone loads a layer above it: {sorted(set(loaded))}"
    if layer == "fastgan.kernels":  # installed from the top-level kernels/ folder
        assert out["file"] and out["file"].endswith(os.path.join("kernels", "__init__.py")) \
            and not out["file"].endswith(os.path.join("fastgan", "kernels", "__init__.py")), \
            f"fastgan.kernels comes from {out['file']}, not from the top-level kernels/"


# ---- the static pass ----------------------------------------------------------------------

def _source_roots() -> Dict[str, pathlib.Path]:
    """Package name -> folder. kernels/ is mapped onto fastgan.kernels (setup.py package_dir)."""
    roots = {"fastgan": REPO / "fastgan"}
    if (REPO / "kernels" / "__init__.py").exists():
        roots["fastgan.kernels"] = REPO / "kernels"
    return roots


def _modules() -> Dict[str, Tuple[pathlib.Path, bool]]:
    """Module name -> (file, is_package) for every .py under the source roots."""
    mods: Dict[str, Tuple[pathlib.Path, bool]] = {}
    for pkg, root in _source_roots().items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("").parts
            if "__pycache__" in rel:
                continue
            is_pkg = rel[-1] == "__init__"
            parts = rel[:-1] if is_pkg else rel
            name = ".".join((pkg,) + parts)
            if pkg == "fastgan" and name.startswith("fastgan.kernels") and \
                    "fastgan.kernels" in _source_roots():
                continue  # a stale fastgan/kernels/ next to the mapped kernels/
            mods[name] = (path, is_pkg)
    return mods


def _walk_imports(tree: ast.AST, module_level: bool) -> Iterator[ast.stmt]:
    """Import statements; with ``module_level``, only those run when the module is imported
    (not in a function body, not under ``if TYPE_CHECKING:``)."""
    def visit(node: ast.AST) -> Iterator[ast.stmt]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            elif module_level and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                     ast.Lambda)):
                continue
            elif module_level and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.dump(
                    child.test):
                yield from (n for s in child.orelse for n in visit_stmt(s))
            else:
                yield from visit(child)

    def visit_stmt(stmt: ast.stmt) -> Iterator[ast.stmt]:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            yield stmt
        else:
            yield from visit(stmt)

    return visit(tree)


def _targets(name: str, is_pkg: bool, node: ast.stmt, mods) -> List[str]:
    """The fastgan modules an import statement runs (a ``from`` of a submodule names it)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "fastgan"]
    base = node.module or ""
    if node.level:
        pkg = name.split(".") if is_pkg else name.split(".")[:-1]
        pkg = pkg[:len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    if base.split(".")[0] != "fastgan":
        return []
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if sub in mods else base)
    return out


@functools.lru_cache(maxsize=None)
def _graph(module_level: bool) -> Dict[str, Set[str]]:
    mods = _modules()
    graph: Dict[str, Set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = set()
        for node in _walk_imports(tree, module_level):
            edges.update(t for t in _targets(name, is_pkg, node, mods) if t != name)
        graph[name] = edges
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: List[Tuple[str, Iterator[str]]] = []
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work.append((root, iter(sorted(graph.get(root, ())))))
        while work:
            v, it = work[-1]
            w: Optional[str] = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on_stack.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
                continue
            if w not in graph:
                continue
            if w not in index:
                index[w] = low[w] = counter
                counter += 1
                stack.append(w)
                on_stack.add(w)
                work.append((w, iter(sorted(graph.get(w, ())))))
            elif w in on_stack:
                low[v] = min(low[v], index[w])
    return out


def test_no_module_level_import_cycle():
    graph = _graph(module_level=True)
    assert len(graph) > 20, f"the static pass found only {sorted(graph)}"
    cycles = _cycles(graph)
    detail = ["; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in cycles]
    assert not cycles, "module-level import cycles:\n" + "\n".join(detail)


def _layer_of(module: str) -> Optional[str]:
    best = None
    for layer in FORBIDDEN:
        if _matches(module, layer) and (best is None or len(layer) > len(best)):
            best = layer
    return best


@pytest.mark.parametrize("layer", list(FORBIDDEN))
def test_no_layer_imports_above_it_anywhere(layer):
    """Deferred imports included: a layer may not reach up even inside a function."""
    graph = _graph(module_level=False)
    mine = [name for name in sorted(graph) if _layer_of(name) == layer]
    assert mine, f"no module of {layer} under {sorted(map(str, _source_roots().values()))}"
    bad = [f"{name} imports {t}" for name in mine
           for t in sorted(graph[name]) if any(_matches(t, f) for f in FORBIDDEN[layer])]
    assert not bad, "imports of a layer above:\n" + "\n".join(bad)


def test_engine_uses_only_the_variants_interface():
    """The engine never names a concrete variant: it imports fastgan.variants (VARIANTS,
    get_variant), its base and sampling modules, nothing else of it."""
    bad = [f"{name} imports {t}" for name, edges in sorted(_graph(module_level=False).items())
           if _matches(name, "fastgan.engine")
           for t in sorted(edges)
           if _matches(t, "fastgan.variants") and t not in ENGINE_VARIANT_MODULES]
    assert not bad, "\n".join(bad)


def test_kernels_register_nothing():
    """kernels/ holds @triton.jit functions and their launchers only: a second import as the
    bare folder ``kernels`` (cwd = repo root) must not register a custom op twice."""
    root = _source_roots().get("fastgan.kernels", REPO / "fastgan" / "kernels")
    bad = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in (
                    "custom_op", "register_fake", "register_autograd", "register_kernel"):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.attr}")
            elif isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.startswith(("fastgan.ops", "fastgan.backends", "torch.library"))):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module}")
    assert root == REPO / "kernels", "the Triton kernels are not in the top-level kernels/"
    assert not bad, "registrations in kernels/:\n" + "\n".join(bad)
