"""The layering of docs/architecture.md holds: lower layers never import higher ones, and
``import found`` stays light (no server, video, Ray, ONNX or COCO packages)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "found"
#: module (relative to found/, without .py) → found modules it must never import (prefixes)
FORBIDDEN = {
    "core": ["cli", "engine", "writers", "serve", "video", "distributed", "export", "predictor"],
    "predictor": ["cli", "engine", "writers", "serve", "video", "distributed", "export"],
    "engine": ["cli", "writers", "serve", "video", "distributed", "export"],
    "writers": ["cli", "serve", "video", "distributed", "export"],
    "inputs": ["cli", "engine", "serve", "video", "distributed", "export"],
    "refine": ["cli", "engine", "writers", "predictor", "core", "serve", "video", "distributed", "export"],
    "instances": ["cli", "engine", "writers", "predictor", "core"],
    "head": ["cli", "engine", "writers", "predictor", "core"],
    # the cores (runtime/) sit on the model; the model never reaches up to construction (hub/)
    "runtime": ["cli", "engine", "io", "hub", "serve", "video", "ray", "export", "predictor", "bench", "train", "evaluate"],
    "model": ["cli", "engine", "io", "hub", "runtime", "refine", "predictor", "serve", "video", "ray", "export"],
    "export": ["cli", "engine", "serve", "video", "ray"],
}
#: packages that never import the package root (``from .. import x`` up to found/, ``from found import x``)
NO_ROOT_IMPORTS = ("model", "runtime", "export", "hub")


def _found_imports(path: Path) -> set[str]:
    """The ``found.*`` modules a file imports (relative imports resolved), without the prefix."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    pkg = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = ".".join([*base, node.module] if node.module else base)
                names = [mod] if node.module else [".".join([*base, a.name]) for a in node.names]
                out.update(n.strip(".") for n in names)
            elif node.module and node.module.startswith("found"):
                out.add(node.module.removeprefix("found").strip("."))
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("found").strip(".") for a in node.names if a.name.startswith("found"))
    return out


def test_lower_layers_never_import_higher_ones():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE).with_suffix("")).replace("/", ".")
        rules = [v for k, v in FORBIDDEN.items() if rel == k or rel.startswith(k + ".")]
        for forbidden in rules:
            for imp in _found_imports(path):
                if any(imp == f or imp.startswith(f + ".") for f in forbidden):
                    bad.append(f"{rel} imports found.{imp}")
    assert not bad, bad


def _imports_the_root(path: Path) -> bool:
    """Whether a file imports names from the package root itself (not from one of its modules)."""
    depth = len(path.relative_to(PACKAGE).parts)  # found/x/y.py: 2 → ``from .. import`` is the root
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module is None and node.level == depth:
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "found":
            return True
    return False


def test_lower_packages_never_import_the_package_root():
    bad = [str(p.relative_to(PACKAGE)) for pkg in NO_ROOT_IMPORTS for p in sorted((PACKAGE / pkg).rglob("*.py"))
           if _imports_the_root(p)]
    assert not bad, bad


def test_nothing_outside_the_cli_imports_the_cli():
    outside = [p for p in sorted(PACKAGE.rglob("*.py")) if "cli" not in p.parts and p.name != "__main__.py"]  # python -m found
    bad = [f"{p.relative_to(PACKAGE)} imports found.{i}" for p in outside for i in _found_imports(p) if i == "cli" or i.startswith("cli.")]
    assert not bad, bad


def test_importing_found_and_its_engine_stays_light():
    heavy = ["fastapi", "uvicorn", "av", "ray", "onnxruntime", "onnx", "pycocotools", "playwright", "found.refine", "found.bench"]
    code = ("import sys, found, found.engine, found.io.sinks, found.io.sources, found.cli.main; "
            f"loaded = [m for m in {heavy!r} if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)
