"""Small helpers for wording error messages the same way everywhere."""

from __future__ import annotations


def error_reason(error: BaseException) -> str:
    """Return an exception's message without a final period, to quote inside a sentence of our own."""
    return str(error).rstrip(".") or type(error).__name__
