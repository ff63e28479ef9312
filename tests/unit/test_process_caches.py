"""A worker's process-wide caches hold no face data. A memo keyed on a face's landmarks (the
3D-consistency check's, until 2026-12-07) kept a session's mesh points in the liveness worker
until 8,192 newer ones pushed them out: past the session's erasure and its retention, which
no sweep could reach. Every ``functools`` cache in the service code is listed here with what it
is keyed on; a new one is added only once it is known to hold nothing of a person."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import faces
import services

#: module:function -> what its keys are
ALLOWED = {
    "faces.catalog:builtin_catalog": "nothing (the model catalog shipped in the package)",
    "faces.detection:_grid": "a detector input's height, width and stride",
    "faces.detection:_cells": "a detector input's height and width",
    "faces.openvino_runtime:native_bf16": "nothing (the CPU's capability)",
    "services.call_agent.catalog:_texts": "a language",
    "services.call_agent.overlay:font": "a font size",
}


def caches() -> Iterator[str]:
    for package in (faces, services):
        for module_info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(module_info.name)
            for name, value in vars(module).items():
                if hasattr(value, "cache_info") and getattr(value, "__module__", None) == module.__name__:
                    yield f"{module.__name__}:{name}"


def test_every_process_wide_cache_is_keyed_on_something_that_is_not_a_face() -> None:
    found = set(caches())
    assert found <= set(ALLOWED), f"a cache that may hold face data: {sorted(found - set(ALLOWED))}"
    assert found, "the walk found no cache at all: it no longer looks where the caches are"
