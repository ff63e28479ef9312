"""Python client for integrators: the HTTP API (:class:`FaceproofClient`) and the public broker
API (:class:`BrokerClient`), typed on the shared contracts. docs/public-api.md."""

from faceproof.client.broker import BrokerClient, CommandRefused
from faceproof.client.http import ApiError, FaceproofClient

__all__ = ["ApiError", "BrokerClient", "CommandRefused", "FaceproofClient"]
