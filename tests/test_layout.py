"""The shape of the code: declared dependencies, every package in the layers, lazy heavy imports.

`lint-imports` (run by .ci/run) checks the layers themselves; these tests check what it cannot:
that a plain `pip install tokenwatt` has every package the code imports, and that the layers
contract names every package, so a new one cannot slip past it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tokenwatt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# import name -> distribution name, where they differ
DISTRIBUTION = {"yaml": "pyyaml", "pynvml": "nvidia-ml-py", "importlinter": "import-linter"}
# Packages a plain install may lack: each is imported only behind a check that names its extra.
OPTIONAL = {"torchao": "quant", "codecarbon": "carbon", "matplotlib": "plots",
            "accelerate": "multigpu", "submitit": "slurm", "vllm": "vllm"}  # fmt: skip


def _requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the tokenwatt files importing it (any depth, any scope)."""
    found: dict[str, set[str]] = {}
    for f in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "tokenwatt":
                    found.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return found


def test_every_imported_package_is_a_declared_dependency():
    core = _requirement_names(PYPROJECT["project"]["dependencies"])
    optional = PYPROJECT["project"]["optional-dependencies"]
    extras = {k: _requirement_names(v) for k, v in optional.items()}
    for module, files in sorted(third_party_imports().items()):
        dist = DISTRIBUTION.get(module, module).lower().replace("_", "-")
        if module in OPTIONAL:
            assert dist in extras[OPTIONAL[module]], f"{module} belongs in [{OPTIONAL[module]}]"
            continue
        assert dist in core, f"{module} (imported by {sorted(files)}) is not in dependencies"


def test_layers_contract_names_every_package():
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in re.split(r"[|:]", layer)}
    packages = {f"tokenwatt.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    modules = {f"tokenwatt.{p.stem}" for p in PACKAGE.glob("*.py")} - {
        "tokenwatt.__init__", "tokenwatt.__main__"
    }  # fmt: skip
    assert packages | modules <= named, f"not in the layers: {sorted((packages | modules) - named)}"


def test_no_simulator_branch_in_production_code():
    hits = [
        str(f.relative_to(ROOT))
        for f in PACKAGE.rglob("*.py")
        if "sim" not in f.relative_to(PACKAGE).parts and "is_simulated" in f.read_text("utf-8")
    ]
    assert hits == []


def test_the_command_line_and_the_analysis_import_no_torch():
    code = (
        "import sys, tokenwatt, tokenwatt.cli, tokenwatt.analysis.compare, "
        "tokenwatt.analysis.floor, tokenwatt.energy.recorder, tokenwatt.report.document; "
        "print(sorted(m for m in ('torch', 'transformers', 'torchao') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_import_contracts_hold():
    """The layering and no-cycle contracts, run by plain pytest too (not only by CI's
    lint-imports step), so a layer break or a cycle fails where it is made."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports; "
                        "raise SystemExit(lint_imports(no_cache=True))"], cwd=root,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
