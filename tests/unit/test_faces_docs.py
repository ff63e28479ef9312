"""The snippets in docs/models.md must keep working."""

from __future__ import annotations

import re
from pathlib import Path

from faces.catalog import MANIFEST_NAME, load_catalog
from faces.packs import BUILTIN_PACKS, list_packs
from tests.paths import REPO_ROOT

DOC = REPO_ROOT / "docs" / "models.md"


def test_manifest_example_is_valid(tmp_path: Path) -> None:
    (snippet,) = re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    (tmp_path / MANIFEST_NAME).write_text(snippet)
    assert load_catalog(tmp_path).get("my_embedder.onnx").architecture == "arcface"
    mine = {pack.name: pack for pack in list_packs(tmp_path)}["mine"]
    assert mine.embedders == ("my_embedder.onnx",)


def test_pack_table_matches_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    for pack in BUILTIN_PACKS.values():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{pack.name}`"))
        assert f"| {pack.cosine_threshold:g}" in row
        if pack.calibrated:
            assert f"{pack.calibration.a:g}, {pack.calibration.b:g}" in row
