"""The rule of docs/architecture.md: no function over 60 lines in domain/ or services/ (a longer one
is split into named steps)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 60


def functions_over(limit: int, *folders: Path) -> list[str]:
    """``path:line name (n lines)`` of every function or method longer than ``limit`` lines,
    counted from its ``def`` to its last line (decorators not counted)."""
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > limit:
                        found.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_domain_or_services_is_over_60_lines() -> None:
    assert functions_over(MAX_LINES, ROOT / "domain", ROOT / "services") == []


def test_a_method_of_61_lines_is_found_and_one_of_60_is_not(tmp_path: Path) -> None:
    def method(name: str, lines: int) -> str:
        body = "\n".join(f"        x{i} = {i}" for i in range(lines - 1))
        return f"    async def {name}(self) -> None:\n{body}\n"

    (tmp_path / "m.py").write_text("class C:\n" + method("fits", 60) + method("too_long", 61))
    assert functions_over(MAX_LINES, tmp_path) == ["m.py:62 too_long (61 lines)"]
