"""The HTTP API, typed: request and response bodies are the models of ``contracts.http``."""

from __future__ import annotations

import base64
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from contracts.http import (
    CallCreatedResponse,
    CallResponse,
    CompareRequest,
    CompareResponse,
    CreateCallRequest,
    CreateSessionRequest,
    CreateSessionResponse,
    SessionResponse,
    VerifyRequest,
    VerifyResponse,
)

__all__ = ["ApiError", "FaceproofClient", "image_field"]


class ApiError(Exception):
    """A problem+json answer: ``status``, ``code`` (e.g. NO_FACE_IN_SOURCE) and ``detail``."""

    def __init__(self, status: int, code: str | None, detail: str | None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


def image_field(image: bytes | str | Path) -> str:
    """An image as the API takes it: bytes or a file path -> base64; a string as it is (base64,
    a data URL, or for a session's reference an https URL)."""
    if isinstance(image, Path):
        image = image.read_bytes()
    if isinstance(image, bytes):
        return base64.b64encode(image).decode()
    return image


class FaceproofClient:
    """``with FaceproofClient(url, api_key) as client: client.compare(a, b).match``"""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 60.0) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s
        )

    def __enter__(self) -> FaceproofClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def compare(
        self, source: bytes | str | Path, target: bytes | str | Path, **options: Any
    ) -> CompareResponse:
        body = CompareRequest(source=image_field(source), target=image_field(target), **options)
        return CompareResponse.model_validate(self._call("POST", "/v1/compare", body))

    def verify(
        self, probe: bytes | str | Path, references: list[bytes | str | Path], **options: Any
    ) -> VerifyResponse:
        body = VerifyRequest(
            probe=image_field(probe), references=[image_field(r) for r in references], **options
        )
        return VerifyResponse.model_validate(self._call("POST", "/v1/verify", body))

    def create_session(self, request: CreateSessionRequest | None = None) -> CreateSessionResponse:
        body = request or CreateSessionRequest()
        return CreateSessionResponse.model_validate(self._call("POST", "/v1/sessions", body))

    def get_session(self, session_id: str) -> SessionResponse:
        return SessionResponse.model_validate(self._call("GET", f"/v1/sessions/{session_id}"))

    def join_call(self, request: CreateCallRequest) -> CallCreatedResponse:
        return CallCreatedResponse.model_validate(self._call("POST", "/v1/calls", request))

    def get_call(self, flow_id: str) -> CallResponse:
        return CallResponse.model_validate(self._call("GET", f"/v1/calls/{flow_id}"))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else body.model_dump(mode="json", by_alias=True, exclude_none=True)
        response = self._http.request(method, path, json=payload)
        if response.is_error:
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            raise ApiError(response.status_code, problem.get("code"), problem.get("detail"))
        return response.json()
