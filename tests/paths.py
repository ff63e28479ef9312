"""Where the shared models and face data are (../shared from the repository root by default)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
MODELS_DIR = Path(os.environ.get("FACEPROOF_TEST_MODELS_DIR", SHARED / "models"))
DATA_DIR = Path(os.environ.get("FACEPROOF_TEST_DATA_DIR", SHARED / "data"))
PEOPLE = DATA_DIR / "faces" / "people"
