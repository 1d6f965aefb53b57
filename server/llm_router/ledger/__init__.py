"""Storage for request rows, spend rollups, reservations and budget overrides."""

from .sqlite import GROUPINGS, Ledger, LimitCheck, Refusal, RequestRow

__all__ = ["GROUPINGS", "Ledger", "LimitCheck", "Refusal", "RequestRow"]
