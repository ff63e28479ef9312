"""`.env.example` lists every setting of `infra.settings.Settings`, so it cannot drift.

Re-sync after adding a setting: ``uv run python tests/unit/test_deploy_env.py --write``
(rewrites the file from the live Settings class: descriptions, then the default, commented out).
"""

from __future__ import annotations

import re
import sys
from enum import Enum
from pathlib import Path

from pydantic import SecretStr

from infra.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = REPO_ROOT / ".env.example"
PREFIX = "FACEPROOF_"
LINE = re.compile(r"^#?\s*(FACEPROOF_[A-Z0-9_]+)=(.*)$")

HEADER = """\
# faceproof settings: every FACEPROOF_* environment variable, with its default (infra/settings.py).
# Copy to .env (local runs read ./.env) or point docker compose's FACEPROOF_ENV_FILE at your copy,
# then uncomment and change what you need. Commented lines are the built-in defaults.
# In Kubernetes the same names go into the chart's `settings` (ConfigMap) and `secretSettings` (Secret).
# Secrets (API token, passwords inside URLs) belong in a secret store, not in a committed file.
# Kept in sync by tests/unit/test_deploy_env.py; regenerate with:
#   uv run python tests/unit/test_deploy_env.py --write
"""


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def default_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def render() -> str:
    blocks = [HEADER]
    for name, field in Settings.model_fields.items():
        lines = []
        if field.description:
            lines.append(f"# {field.description}")
        if field.default is None:
            lines.append("# (unset by default)")
        lines.append(f"# {env_name(name)}={default_text(field.default)}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def listed_names(text: str) -> list[str]:
    return [match.group(1) for line in text.splitlines() if (match := LINE.match(line.strip()))]


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    listed = listed_names(ENV_EXAMPLE.read_text())
    expected = {env_name(name) for name in Settings.model_fields}
    missing = sorted(expected - set(listed))
    unknown = sorted(set(listed) - expected)
    assert not missing, (
        f".env.example lacks {missing}; run `uv run python tests/unit/{Path(__file__).name} --write`"
    )
    assert not unknown, f".env.example names settings that do not exist: {unknown}"
    duplicates = sorted({name for name in listed if listed.count(name) > 1})
    assert not duplicates, f".env.example lists these twice: {duplicates}"


def test_env_example_values_are_accepted_by_settings() -> None:
    """Every value the file shows, once uncommented, passes Settings' validation (ValidationError if not)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = LINE.match(line.strip())
        if match and match.group(2):
            values[match.group(1)[len(PREFIX) :].lower()] = match.group(2)
    assert len(values) > len(Settings.model_fields) // 2
    Settings.model_validate(values)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python {sys.argv[0]} --write")
    ENV_EXAMPLE.write_text(render())
    print(f"wrote {ENV_EXAMPLE} ({len(Settings.model_fields)} settings)")
