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


def _marks_simulation(node: ast.AST) -> bool:
    """The simulator's mark: a name or attribute saying simulated (`.simulated`), or the
    binding's flag read by name (`TOKENWATT_SIMULATED`). A label ("simulated-nvml" in a
    row's source) is not the mark."""
    for n in ast.walk(node):
        name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) \
            else n.value if isinstance(n, ast.Constant) and n.value == "TOKENWATT_SIMULATED" \
            else ""  # fmt: skip
        if "simulat" in name.lower():
            return True
    return False


def _is_label(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant)
                                               and isinstance(node.value, str))  # fmt: skip


def simulator_branches(root: Path = PACKAGE) -> list[str]:
    """Control flow in production code (all but tokenwatt/sim) that depends on the simulator's
    mark: an if or while on it, or a conditional expression that picks anything but a label.
    Telling a simulated board's rows apart (`simulated-` sources, measured False) is labelling,
    and allowed; measuring differently is not."""
    hits = []
    for f in sorted(root.rglob("*.py")):
        if "sim" in f.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(f.read_text("utf-8"))):
            test = getattr(node, "test", None)
            if isinstance(node, (ast.If, ast.While, ast.Assert)) and _marks_simulation(test):
                hits.append(f"{f.relative_to(root.parent)}:{node.lineno}")
            elif isinstance(node, ast.IfExp) and _marks_simulation(node.test) \
                    and not (_is_label(node.body) or _is_label(node.orelse)):  # fmt: skip
                hits.append(f"{f.relative_to(root.parent)}:{node.lineno}")
    return hits


def test_no_simulator_branch_in_production_code():
    """The same code path runs on the simulated and on a real board (issue 26: this grepped
    for a name nothing uses, while meters/nvml.py reads TOKENWATT_SIMULATED)."""
    assert simulator_branches() == []


def test_the_simulator_branch_check_finds_one(tmp_path):
    pkg = tmp_path / "tokenwatt"
    (pkg / "energy").mkdir(parents=True)
    (pkg / "energy" / "m.py").write_text(
        "def read(self):\n    if self.simulated:\n        return 0.0\n"
        "    label = 'simulated-x' if self.simulated else 'x'\n"
        "    scale = 2 if getattr(nv, 'TOKENWATT_SIMULATED', False) else 1\n"
    )
    assert simulator_branches(pkg) == ["tokenwatt/energy/m.py:2", "tokenwatt/energy/m.py:5"]


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
