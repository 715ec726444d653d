"""The house rules a reader relies on: small files and functions in the product
packages, and files that describe the project as it is, not its history."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "recording", "train", "export", "serve", "play")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def product_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_product_files_and_functions_stay_small() -> None:
    too_long = []
    for path in product_files():
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if len(source.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {lines} lines")
    assert not too_long, (f"split these (files at most {MAX_FILE_LINES} lines, functions at "
                          f"most {MAX_FUNCTION_LINES}):\n" + "\n".join(too_long))


def test_no_tracked_file_tells_the_history_of_its_making() -> None:
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True, timeout=60).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    diary = re.compile(r"session[ -][0-9]|issue [0-9]", re.IGNORECASE)
    found = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in (".png", ".jpg", ".gif") or not path.is_file():
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                 .splitlines(), 1):
            if diary.search(line):
                found.append(f"{name}:{i}: {line.strip()[:100]}")
    assert not found, "history belongs in git log:\n" + "\n".join(found)


def test_the_readme_and_the_results_page_stay_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250
    assert len((ROOT / "docs" / "long-dreams.md").read_text(encoding="utf-8")
               .splitlines()) <= 300
