"""The model catalog: every model file faceproof knows, its checksum, licence and download sources.

The built-in entries live in ``catalog.json`` (package data). A models directory may hold a
``manifest.json`` with the same schema: its ``models`` add to or replace built-in entries (by
file name) and its optional ``packs`` define extra packs (see :mod:`faces.packs`). That is how
a user plugs in their own model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from faces.errors import ModelError

__all__ = [
    "MANIFEST_NAME",
    "Architecture",
    "Catalog",
    "Licence",
    "Manifest",
    "ModelEntry",
    "Source",
    "Task",
    "builtin_catalog",
    "load_catalog",
    "read_manifest",
]

MANIFEST_NAME: Final = "manifest.json"

Task = Literal["detector", "embedder", "landmarks", "antispoof"]
Architecture = Literal[
    "scrfd",
    "yunet",
    "sface",
    "mobilefacenet",
    "arcface",
    "mediapipe_face_mesh",
    "mediapipe_iris",
    "minifasnet",
]
_SHA256: Final = r"^[0-9a-f]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Licence(_Strict):
    id: str = Field(description="SPDX identifier, or LicenseRef-... for custom terms")
    text: str = Field(description="What the licence allows, in one or two sentences")


class Source(_Strict):
    """Where a file can be downloaded: directly, or as ``member`` of a zip archive."""

    url: str
    member: str | None = None
    archive_sha256: str | None = Field(default=None, pattern=_SHA256)


class ModelEntry(_Strict):
    file: str = Field(pattern=r"^[^/\\]+$")
    task: Task
    architecture: Architecture
    sha256: str | None = Field(default=None, pattern=_SHA256, description="None: not verified (own models)")
    size: int | None = None
    licence: Licence
    commercial_use: bool
    origin: str
    sources: tuple[Source, ...] = ()
    derived_from: str | None = Field(
        default=None,
        description="Made at install time from this catalog file (faces.graphs.fold_weights), not downloaded",
    )


class Manifest(_Strict):
    """Schema of ``catalog.json`` and of a models directory's ``manifest.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    comment: str | None = Field(default=None, alias="$comment")
    models: tuple[ModelEntry, ...] = ()
    packs: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Catalog:
    """Model entries by file name."""

    entries: Mapping[str, ModelEntry]

    def __contains__(self, file: object) -> bool:
        return file in self.entries

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, file: str) -> ModelEntry:
        try:
            return self.entries[file]
        except KeyError:
            raise ModelError(
                f"{file} is not in the model catalog; describe it in {MANIFEST_NAME} in the models directory"
            ) from None

    def merged(self, extra: tuple[ModelEntry, ...]) -> Catalog:
        return Catalog(entries={**self.entries, **{entry.file: entry for entry in extra}})


def _parse(text: str, origin: str) -> Manifest:
    try:
        return Manifest.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ModelError(f"{origin} is not a valid model manifest: {exc}") from exc


@cache
def builtin_catalog() -> Catalog:
    """The entries shipped in ``faces/catalog.json``."""
    text = resources.files("faces").joinpath("catalog.json").read_text(encoding="utf-8")
    manifest = _parse(text, "faces/catalog.json")
    return Catalog(entries={entry.file: entry for entry in manifest.models})


def read_manifest(models_dir: Path | None) -> Manifest:
    """The models directory's ``manifest.json``, or an empty manifest when there is none."""
    if models_dir is None:
        return Manifest()
    path = models_dir / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Manifest()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    return _parse(text, str(path))


def load_catalog(models_dir: Path | None = None) -> Catalog:
    """Built-in entries, overridden and extended by ``models_dir/manifest.json`` when present."""
    return builtin_catalog().merged(read_manifest(models_dir).models)
