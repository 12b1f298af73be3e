"""The package layers hold (import-linter's contracts in .importlinter), a wrong-way import fails
the suite, and no module imports itself through others (tests/import_cycles.py)."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "monitoring", "reports", "tfx_pipeline", "modules", "serving", "fmnist")
RUNNERS = ("local_runner.py", "kubeflow_runner.py")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
IMPORT_CYCLES = REPO / "tests" / "import_cycles.py"


def _run_on(root: Path, command: list[str]) -> subprocess.CompletedProcess:
    # A subprocess with only `root` on the path: the shared venv's editable install points elsewhere.
    return subprocess.run(command, cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return _run_on(root, [str(LINT_IMPORTS), "--config", str(REPO / ".importlinter"), "--no-cache"])


def _copy_project(root: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for runner in RUNNERS:
        shutil.copy(REPO / runner, root / runner)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_every_contract_is_kept():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_wrong_way_import_breaks_the_layers(tmp_path):
    _copy_project(tmp_path)
    _append(tmp_path / "fmnist" / "features.py", "\nfrom tfx_pipeline import config  # noqa\n")
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
    # label what it pushed (serving.release.labels, the `fmnist release` operations), nothing else of serving.
    for runner in RUNNERS:
        imported = _imported_modules(REPO / runner)
        assert not {m for m in imported if m.split(".")[0] == "cli"}, runner
        assert {m for m in imported if m.split(".")[0] == "serving"} <= {"serving.release.labels"}, runner


def test_the_release_operations_reach_a_server_through_the_client():
    # .importlinter forbids release -> server; this is the other half: the gates and
    # served_labels() ask a server through serving.client, not a client of their own.
    imported = _imported_modules(REPO / "serving" / "release" / "labels.py")
    assert "serving.client.clients" in imported
    assert not {m for m in imported if m.startswith("serving.server")}


def test_no_module_level_import_cycles():
    result = _run_on(REPO, [sys.executable, str(IMPORT_CYCLES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 import cycles"


def test_an_import_cycle_fails_but_a_type_checking_import_does_not(tmp_path):
    _copy_project(tmp_path)
    # The cycle issue #25 found (the servable replaying its warmup through the servicer), back.
    _append(tmp_path / "serving" / "server" / "servables.py", "\nfrom serving.server import warmup  # noqa\n")
    # A runner is no package to grimp: its side of a cycle is read with ast.
    _append(tmp_path / "tfx_pipeline" / "config.py", "\nimport kubeflow_runner  # noqa\n")
    # Never runs, so no cycle: batching imports errors.
    _append(tmp_path / "serving" / "protocol" / "errors.py",
            "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from serving.server import batching  # noqa\n")
    result = _run_on(tmp_path, [sys.executable, str(IMPORT_CYCLES)])
    cycles = result.stdout.strip().splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    assert cycles == ["kubeflow_runner -> tfx_pipeline.config -> kubeflow_runner",
                      "serving.server.servables -> serving.server.warmup -> serving.server.servables",
                      "2 import cycles"]
