"""The errors the face pipeline raises; third-party errors are translated into these at the edge.

All of them are permanent for the input or configuration that caused them: retrying the same
image or the same model directory gives the same answer.
"""

from __future__ import annotations

__all__ = ["FaceError", "ImageTooLargeError", "InvalidImageError", "ModelError"]


class FaceError(Exception):
    """Base class of every error raised by :mod:`faces`."""


class InvalidImageError(FaceError):
    """The bytes are not an image we accept.

    ``reason`` is a stable machine-readable code: ``"empty"``, ``"undecodable"``,
    ``"unsupported_format"`` or ``"corrupt"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ImageTooLargeError(FaceError):
    """The image declares more pixels than allowed (a decompression bomb, or just too big)."""

    def __init__(self, max_pixels: int, width: int | None = None, height: int | None = None) -> None:
        if width is None or height is None:
            message = f"image declares more pixels than Pillow's decompression-bomb limit (and {max_pixels})"
        else:
            message = f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        super().__init__(message)
        self.width = width
        self.height = height
        self.max_pixels = max_pixels


class ModelError(FaceError):
    """A model file is missing, fails its checksum, cannot be loaded, or a pack is unknown."""
