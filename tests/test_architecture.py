"""The house rules of docs/architecture.md, checked with the tests: the import contracts of
pyproject.toml (import-linter), ruff's lint and import order, and one home for each file name."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    return shutil.which(name, path=str(BIN)) or name


def test_every_import_contract_is_kept():
    done = subprocess.run([tool("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"Contracts: (\d+) kept, 0 broken", done.stdout)


def test_ruff_passes():
    done = subprocess.run([tool("ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_each_file_name_a_run_writes_is_spelled_in_layout_alone():
    """A reader and a writer can only disagree on a name if it is spelled twice."""
    from kddocre_ray import layout

    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and "." in v}
    assert {"metrics.json", "pipeline.json", "result.json", "manifest.json", "config.yaml"} <= names
    package = REPO / "kddocre_ray"
    for path in package.rglob("*.py"):
        if path.name == "layout.py":
            continue
        text = path.read_text()
        for name in names:
            assert f'"{name}"' not in text and f"'{name}'" not in text, f"{path.relative_to(REPO)} spells {name}"
