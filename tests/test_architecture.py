"""The layering of docs/architecture.md holds for every module, transitively: each stage imports only
the stages below it, surfaces never import each other or the CLI, nothing imports the package root,
``import found`` stays light, and no function grows past what a reader can hold."""
from __future__ import annotations

import ast
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "found"

#: the modules that may sit at the package root (everything else lives in a folder named after its stage)
ROOT_MODULES = {"__init__", "__main__", "engine", "predictor", "options", "errors", "extras", "version"}

LEAVES = {"errors", "extras", "version"}
BELOW_SURFACES = {"model", "refine", "hub", "runtime", "io", "predictor", "engine", "options"} | LEAVES
SURFACES = {"video", "serve", "ray", "export"}
RESEARCH = {"train", "evaluate", "bench"}

#: stage (first part of the module path) → the stages it may import (its own stage always allowed)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "version": set(),
    "extras": {"errors"},
    "model": LEAVES,
    "refine": {"model"} | LEAVES,
    "hub": {"model", "refine", "runtime", "predictor", "io", "options"} | LEAVES,  # construction builds predictors
    "runtime": {"model", "refine"} | LEAVES,
    "io": {"model"} | LEAVES,  # model for value types (instances) and the pure edge filter
    "options": {"model"} | LEAVES,
    "predictor": {"runtime", "model", "refine", "io", "options"} | LEAVES,
    "engine": {"predictor", "hub", "runtime", "model", "refine", "io", "options"} | LEAVES,  # hub: segment()'s default model
    **{s: BELOW_SURFACES for s in SURFACES},
    **{r: BELOW_SURFACES | RESEARCH for r in RESEARCH},
    "cli": BELOW_SURFACES | SURFACES | RESEARCH | {"cli"},
    "__main__": BELOW_SURFACES | SURFACES | RESEARCH | {"cli"},
}
#: precise rules the stage table cannot say
EXTRA_FORBIDDEN = {
    "io": ["model.backbone", "model.background", "model.head"],
}
#: the one crossing allowed: a process-wide setting shared by image decoding and the bilateral solver
EXTRA_ALLOWED = {"refine": ["io.override", "io.images"]}  # + the one image normaliser


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The ``found`` modules a file imports (relative imports resolved), without the ``found.`` prefix;
    ``""`` stands for the package root itself."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    pkg = list(rel.parts[:-1])
    tree = ast.parse(path.read_text())
    type_only = {id(n) for t in ast.walk(tree) if isinstance(t, ast.If) and "TYPE_CHECKING" in ast.unparse(t.test)
                 for b in t.body for n in ast.walk(b)}
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if id(node) in type_only or (isinstance(node, ast.ImportFrom) and all(a.name.startswith("__") for a in node.names)):
            continue  # annotations only, or the version string
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "found"):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            else:
                base = node.module.split(".")[1:]
            mod = ".".join([*base, node.module] if node.level and node.module else base)
            for a in node.names:
                sub = f"{mod}.{a.name}".strip(".")
                out.add(sub if (PACKAGE / sub.replace(".", "/")).with_suffix(".py").exists()
                        or (PACKAGE / sub.replace(".", "/")).is_dir() else mod)
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("found").strip(".") for a in node.names if a.name.split(".")[0] == "found")
    return out


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _stage(module: str) -> str:
    return module.split(".")[0]


@lru_cache(maxsize=None)
def _closure(module: str) -> frozenset[str]:
    """Every ``found`` module reachable from ``module`` through its imports (lazy ones included)."""
    modules = _modules()
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        for imp in _imports(modules[m]) if m in modules else ():
            for target in _with_parents(imp):
                if target not in seen and target in modules:
                    seen.add(target)
                    todo.append(target)
    return frozenset(seen)


def _with_parents(module: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` too."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_the_package_root_holds_only_the_named_modules():
    root = {p.stem for p in PACKAGE.glob("*.py")}
    assert root <= ROOT_MODULES, sorted(root - ROOT_MODULES)
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(ALLOWED), sorted(folders - set(ALLOWED))


def test_every_module_imports_only_the_stages_below_it_transitively():
    bad = []
    for module in _modules():
        if module == "":
            continue
        stage = _stage(module)
        allowed = ALLOWED[stage] | {stage}
        for target in _closure(module):
            if any(target in _with_parents(e) or target.startswith(e + ".") for e in EXTRA_ALLOWED.get(stage, [])):
                continue  # an allowed crossing (its package's __init__ included)
            if target and _stage(target) not in allowed and target != module:
                bad.append(f"found.{module} reaches found.{target}")
            if any(target == f or target.startswith(f + ".") for f in EXTRA_FORBIDDEN.get(stage, [])):
                bad.append(f"found.{module} reaches found.{target}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_nothing_inside_the_package_imports_its_root():
    bad = [f"found.{m}" for m, p in _modules().items() if m not in ("", "__main__") and "" in _imports(p)]
    assert not bad, bad


def test_surfaces_never_import_each_other_or_the_cli():
    bad = []
    for module in _modules():
        stage = _stage(module)
        if stage in SURFACES | RESEARCH:
            for target in _closure(module):
                other = _stage(target)
                if other == "cli" or (other in SURFACES and other != stage):
                    bad.append(f"found.{module} reaches found.{target}")
    assert not bad, bad


@pytest.mark.parametrize("stage", ["io", "options", "model"])
def test_light_stages_import_no_heavy_library_at_import_time(stage):
    """``io`` and ``options`` import neither torch nor a model at import time; nothing below the
    surfaces imports a server, video, Ray or ONNX library at import time."""
    heavy = {"fastapi", "uvicorn", "starlette", "av", "ray", "onnxruntime", "onnx", "pycocotools", "pyarrow"}
    if stage in ("io", "options"):
        heavy |= {"torch"}
    bad = []
    for module, path in _modules().items():
        if _stage(module) != stage:
            continue
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"found.{module} imports {n}" for n in names if n.split(".")[0] in heavy]
    assert not bad, bad


def test_importing_found_and_its_engine_stays_light():
    heavy = ["fastapi", "uvicorn", "av", "ray", "onnxruntime", "onnx", "pycocotools", "playwright", "pyarrow",
             "found.refine", "found.bench", "found.serve", "found.video", "found.ray", "found.export"]
    code = ("import sys, found, found.engine, found.io.sinks, found.io.sources, found.cli.main; "
            f"loaded = [m for m in {heavy!r} if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


#: functions allowed past the limit because they are declarative (a table of flags or keys)
DECLARATIVE = {"cli.segment.add_parser", "cli.serve.add_parser", "cli.train.add_parser", "cli.evaluate.add_parser",
               "cli.bench.add_arguments", "cli.export.add_parser", "cli.common.add_model_args"}
MAX_FUNCTION_LINES = 80


def test_functions_stay_short_enough_to_hold():
    long = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and f"{module}.{node.name}" not in DECLARATIVE:
                    long.append(f"found.{module}.{node.name}: {lines} lines")
    assert not long, long


def test_old_import_paths_name_their_new_place():
    code = ("import warnings, found\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import found.writers as old\n"
            "import found.io.sinks as new\n"
            "assert old is new, (old, new)\n"
            "assert any('found.io.sinks' in str(x.message) for x in w), [str(x.message) for x in w]\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    for old, new in __import__("found").MOVED.items():
        assert (PACKAGE.parent / new.replace(".", "/")).with_suffix(".py").exists() or \
            (PACKAGE.parent / new.replace(".", "/")).is_dir(), (old, new)


#: the same name on purpose: one file per command, and solver backends with one signature
SAME_NAME_BY_DESIGN = {"add_parser", "run", "solve"}


def test_no_two_public_classes_or_functions_share_a_name():
    where: dict[str, list[str]] = {}
    for module, path in _modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(f"found.{module}")
    twice = {k: v for k, v in where.items() if len(v) > 1 and k not in SAME_NAME_BY_DESIGN}
    assert not twice, twice


def test_no_private_name_is_imported_across_modules():
    bad = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "found"):
                bad += [f"found.{module} imports {a.name} from {'.' * node.level}{node.module or ''}"
                        for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, bad


def test_every_public_function_and_class_says_what_it_does():
    """Every public function, method, property and class has a docstring (the project's standard: what it
    is or does and, where not obvious, why); functions defined inside another function are exempt."""
    missing = []
    for path in _modules().values():
        tree = ast.parse(path.read_text())
        nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for stmt in f.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_") \
                    and id(node) not in nested and ast.get_docstring(node) is None:
                missing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}")
    assert not missing, "\n".join(missing)
