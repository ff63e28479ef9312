"""Get model files into a models directory: copy from a local mirror or download, always checksummed.

Every file is written to a temporary name in the destination directory, its SHA-256 checked
against the catalog while it is written, and only then renamed into place: a failed or
tampered transfer never leaves a file under the real name. InsightFace files come inside
their release zips; each zip is downloaded once per call and only the needed members are kept.
A catalog entry with ``derived_from`` is made here from that file (its int8 weights folded to
fp32 by :func:`faces.graphs.fold_weights`) and checked against its SHA-256 the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Final

import httpx
from tqdm import tqdm

from faces.catalog import Catalog, ModelEntry, Source, load_catalog
from faces.checksums import file_sha256, sha256_file
from faces.errors import ModelError
from faces.packs import get_pack

__all__ = ["fetch_models"]

_CHUNK: Final = 1 << 20
_TIMEOUT: Final = httpx.Timeout(30.0, read=120.0)


def fetch_models(
    dest: Path,
    *,
    pack: str | None,
    from_dir: Path | None,
    client: httpx.Client | None = None,
    progress: bool = True,
    required: Iterable[str] = (),
) -> list[Path]:
    """Make the files of ``pack`` (or, with ``pack=None``, every catalog file that can be got) present.

    With ``from_dir`` the files are copied from that directory, otherwise downloaded from the
    catalog's sources. Files already in ``dest`` with the right checksum are kept. Returns the
    paths of the pack's files in ``dest`` (for ``pack=None``: of every file fetched or kept).
    Raises :class:`ModelError` for a missing source file, a failed download or a checksum
    mismatch (the bad copy is deleted), and, before fetching anything, when a ``required`` file
    (one a service cannot start without) can be got neither from ``from_dir`` nor by download.
    """
    dest.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(dest)
    wanted, unobtainable = _wanted(catalog, dest, pack=pack, from_dir=from_dir, required=required)
    if unobtainable:
        where = f"not in {from_dir}" if from_dir is not None else "no public download"
        raise ModelError(
            f"{', '.join(unobtainable)}: {where}, and the services cannot start without them; copy them "
            f"from a directory that has them (`faceproof models fetch --from DIR`, docs/models.md)"
        )
    missing = [entry for entry in wanted if not _is_good(dest / entry.file, entry)]
    derived = [entry for entry in missing if entry.derived_from is not None]
    sources = [catalog.get(entry.derived_from) for entry in derived if entry.derived_from is not None]
    to_get = list({entry.file: entry for entry in missing + sources if entry.derived_from is None}.values())
    to_get = [entry for entry in to_get if not _is_good(dest / entry.file, entry)]
    if from_dir is not None:
        for entry in to_get:
            _copy(from_dir / entry.file, dest / entry.file, entry, progress=progress)
    elif to_get:
        with _client_scope(client) as http:
            _download(http, to_get, dest, progress=progress)
    for entry, source in zip(derived, sources, strict=True):
        _derive(dest / source.file, dest / entry.file, entry)
    return [dest / entry.file for entry in wanted]


def _wanted(
    catalog: Catalog, dest: Path, *, pack: str | None, from_dir: Path | None, required: Iterable[str]
) -> tuple[list[ModelEntry], list[str]]:
    """The entries to make present (the pack's, or every obtainable one; and the required ones),
    and the required files that cannot be got."""

    def obtainable(entry: ModelEntry, *, download: bool = True) -> bool:
        if _is_good(dest / entry.file, entry):
            return True
        if entry.derived_from is not None:
            return obtainable(catalog.get(entry.derived_from), download=download)
        if from_dir is not None:
            return (from_dir / entry.file).is_file()
        return download and bool(entry.sources)

    needed = [catalog.get(file) for file in dict.fromkeys(required)]
    unobtainable = [entry.file for entry in needed if not obtainable(entry)]
    if pack is None:
        return [entry for entry in catalog if obtainable(entry)], unobtainable
    chosen = get_pack(pack, dest)
    wanted = [catalog.get(chosen.detector)]
    alternatives = [catalog.get(file) for file in chosen.embedders]
    # the first alternative that needs no download (present, derivable, in the mirror), else the
    # first one that can be downloaded
    candidates = [entry for entry in alternatives if obtainable(entry, download=False)] or [
        entry for entry in alternatives if obtainable(entry)
    ]
    wanted.append(candidates[0] if candidates else alternatives[0])
    return wanted + [entry for entry in needed if entry not in wanted], unobtainable


def _is_good(path: Path, entry: ModelEntry) -> bool:
    return path.is_file() and (entry.sha256 is None or file_sha256(path) == entry.sha256)


def _copy(source: Path, target: Path, entry: ModelEntry, *, progress: bool) -> None:
    if not source.is_file():
        raise ModelError(f"{entry.file} is not in {source.parent}")
    with source.open("rb") as handle:
        _write_verified(_chunks(handle), target, entry, total=source.stat().st_size, progress=progress)


@contextlib.contextmanager
def _client_scope(client: httpx.Client | None) -> Iterator[httpx.Client]:
    if client is not None:
        yield client
        return
    with httpx.Client(timeout=_TIMEOUT, follow_redirects=True) as own:
        yield own


def _download(client: httpx.Client, entries: list[ModelEntry], dest: Path, *, progress: bool) -> None:
    archives: dict[str, tuple[Source, list[ModelEntry]]] = {}
    for entry in entries:
        if not entry.sources:
            raise ModelError(
                f"{entry.file} has no public download; copy it from a directory that has it "
                f"(`faceproof models fetch --from DIR`)"
            )
        source = entry.sources[0]
        if source.member is None:
            with _stream(client, source.url) as (chunks, total):
                _write_verified(chunks, dest / entry.file, entry, total=total, progress=progress)
        else:
            archives.setdefault(source.url, (source, []))[1].append(entry)
    for source, members in archives.values():
        _download_archive(client, source, members, dest, progress=progress)


def _download_archive(
    client: httpx.Client, source: Source, entries: list[ModelEntry], dest: Path, *, progress: bool
) -> None:
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as scratch:
        archive = Path(scratch) / "archive.zip"
        digest = hashlib.sha256()
        with _stream(client, source.url) as (chunks, total), archive.open("wb") as out:
            for chunk in _progress(chunks, total, source.url.rsplit("/", 1)[-1], progress):
                digest.update(chunk)
                out.write(chunk)
        if source.archive_sha256 is not None and digest.hexdigest() != source.archive_sha256:
            raise ModelError(
                f"{source.url} has sha256 {digest.hexdigest()}, expected {source.archive_sha256}; not used"
            )
        try:
            with zipfile.ZipFile(archive) as bundle:
                names = {Path(info.filename).name: info for info in bundle.infolist() if not info.is_dir()}
                for entry in entries:
                    member = names.get(Path(source.member or entry.file).name)
                    if member is None:
                        raise ModelError(f"{source.url} does not contain {source.member}")
                    with bundle.open(member) as handle:
                        _write_verified(
                            _chunks(handle),
                            dest / entry.file,
                            entry,
                            total=member.file_size,
                            progress=progress,
                        )
        except zipfile.BadZipFile as exc:
            raise ModelError(f"{source.url} is not a valid zip archive: {exc}") from exc


@contextlib.contextmanager
def _stream(client: httpx.Client, url: str) -> Iterator[tuple[Iterator[bytes], int | None]]:
    try:
        with client.stream("GET", url, follow_redirects=True) as response:
            response.raise_for_status()
            length = response.headers.get("content-length")
            yield response.iter_bytes(_CHUNK), int(length) if length and length.isdigit() else None
    except httpx.HTTPError as exc:
        raise ModelError(f"download of {url} failed: {exc}") from exc


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(_CHUNK):
        yield chunk


def _progress(chunks: Iterable[bytes], total: int | None, label: str, enabled: bool) -> Iterator[bytes]:
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not enabled, leave=False) as bar:
        for chunk in chunks:
            bar.update(len(chunk))
            yield chunk


def _write_verified(
    chunks: Iterable[bytes], target: Path, entry: ModelEntry, *, total: int | None, progress: bool
) -> None:
    """Write to a temporary file beside ``target``, check the SHA-256, then rename into place."""

    def write(tmp: Path) -> str:
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for chunk in _progress(chunks, total, entry.file, progress):
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    _verified_into_place(target, entry, write)


def _derive(source: Path, target: Path, entry: ModelEntry) -> None:
    """Make a derived model (``derived_from``: weights folded to fp32) and check its SHA-256."""
    from faces.graphs import write_folded  # onnx and onnxslim are needed only here

    def write(tmp: Path) -> str:
        write_folded(source, tmp)
        return sha256_file(tmp)

    _verified_into_place(target, entry, write)


def _verified_into_place(target: Path, entry: ModelEntry, write: Callable[[Path], str]) -> None:
    """``write`` fills a temporary file beside ``target`` and returns its SHA-256; renamed if it matches."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(temporary)
    try:
        actual = write(tmp)
        if entry.sha256 is not None and actual != entry.sha256:
            raise ModelError(
                f"{entry.file}: sha256 {actual} does not match the catalog's {entry.sha256}; "
                "the file was rejected"
            )
        tmp.chmod(0o644)  # mkstemp creates 0600; models are read by other service users
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
