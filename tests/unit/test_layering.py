"""The layout's import rules (STYLE.md): analysis -> sweeps -> {slurm, scaling, gr_core} -> kernels."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gr_core", "kernels", "scaling", "sweeps", "slurm", "analysis", "gr_scaling")
ALLOWED = {
    "kernels": set(),
    "gr_core": {"kernels"},
    "scaling": {"gr_core"},  # configs and sequence lengths only
    "slurm": set(),
    "sweeps": {"slurm", "scaling", "gr_core"},
    "analysis": {"sweeps", "slurm", "scaling", "gr_core"},
    "gr_scaling": set(PACKAGES) - {"gr_scaling"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package: str) -> None:
    for path in _modules(package):
        ours = _imports(path) & set(PACKAGES) - {package}
        assert ours <= ALLOWED[package], f"{path.relative_to(ROOT)} imports {sorted(ours - ALLOWED[package])}"


def test_only_slurm_imports_submitit_and_only_plots_import_matplotlib() -> None:
    for package in PACKAGES:
        for path in _modules(package):
            imports = _imports(path)
            rel = path.relative_to(ROOT).as_posix()
            if "submitit" in imports:
                assert rel.startswith("slurm/"), rel
            if "matplotlib" in imports:
                assert rel == "analysis/plots.py", rel


def test_spec_validation_and_planning_do_not_import_torch() -> None:
    code = (
        "import sys; import sweeps.plan, sweeps.spec, scaling, scaling.summary, gr_core.config, gr_core.families;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- scaling/ reads gr_core's configs and family formulas, never its torch modules ---------------

TORCH = {"torch", "triton"}


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _load_time_imports(path: Path) -> set[str]:
    """Dotted modules `path` imports when it is imported: module-level statements (also inside
    if/try blocks), not function bodies (a family's lazy `build`) nor `if TYPE_CHECKING:` blocks."""
    names: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return names


def _source(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None  # not ours, or a name imported from a module rather than a module


def _loads_torch(module: str, seen: set[str] | None = None) -> bool:
    """Whether importing `module` (one of ours) loads torch or triton, following our own modules'
    load-time imports and the parent packages every import runs."""
    seen = set() if seen is None else seen
    if module in seen:
        return False
    seen.add(module)
    parts = module.split(".")
    parents = [".".join(parts[:i]) for i in range(1, len(parts))]
    if any(_loads_torch(parent, seen) for parent in parents):
        return True
    path = _source(module)
    if path is None:
        return False
    imported = _load_time_imports(path)
    if {name.split(".")[0] for name in imported} & TORCH:
        return True
    return any(_loads_torch(name, seen) for name in imported if name.split(".")[0] in PACKAGES)


def test_scaling_imports_no_torch_module_of_gr_core_outside_measure() -> None:
    """Planning and `gr-scaling flops` stay torch-free: scaling reads a family's formulas from
    its torch-free module in gr_core/families, never its torch module; only scaling/measure.py
    (the FlopCounterMode measurement) may import gr_core's models."""
    assert _loads_torch("gr_core.hstu") and _loads_torch("gr_core.encoder")  # the check sees torch modules
    assert not _loads_torch("gr_core.families")  # and a family's lazy build() is not a load-time import
    for path in _modules("scaling"):
        if path.name == "measure.py":
            continue
        tree = ast.parse(path.read_text())
        used = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        for node in ast.walk(tree):  # anywhere in the file: a lazy import inside a function counts too
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                used.add(node.module)
                used.update(f"{node.module}.{alias.name}" for alias in node.names)
        for module in sorted(name for name in used if name.split(".")[0] == "gr_core"):
            assert not _loads_torch(module), f"{path.relative_to(ROOT)} imports {module}, which loads torch"
