"""Moved to ``domain.outgoing``; this name stays only until infra/outbox.py imports from there
(another change in progress edits that file). Import ``domain.outgoing``."""

from domain.outgoing import REASON_HEADER, Outgoing

__all__ = ["REASON_HEADER", "Outgoing"]
