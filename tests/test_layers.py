"""The package layers hold (import-linter's contracts in .importlinter), and a wrong-way import
fails the suite."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "reports", "tfx_pipeline", "modules", "serving", "fmnist")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(REPO / ".importlinter"), "--no-cache"],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_wrong_way_import_breaks_the_layers(tmp_path):
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    features = tmp_path / "fmnist" / "features.py"
    features.write_text(features.read_text() + "\nfrom tfx_pipeline import config  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "Layers point one way" in result.stdout and "BROKEN" in result.stdout
    assert "fmnist.features -> tfx_pipeline.config" in result.stdout


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_runners_sit_below_the_cli_and_use_serving_only_to_release():
    # import-linter takes packages only; the two runner modules are checked here. A runner may
    # label what it pushed (serving.release, the `fmnist release` operations), nothing else of serving.
    for runner in ("local_runner.py", "kubeflow_runner.py"):
        imported = _imported_modules(REPO / runner)
        assert not {m for m in imported if m.split(".")[0] == "cli"}, runner
        assert {m for m in imported if m.split(".")[0] == "serving"} <= {"serving.release"}, runner
