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
        "import sys; import sweeps.plan, sweeps.spec, scaling, gr_core.config;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
