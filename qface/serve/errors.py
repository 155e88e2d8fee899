"""The one error type of the service: an HTTP status, a stable machine-readable code and a message for people.

Every refusal is answered as JSON `{"code": ..., "message": ...}` (README, "Serve" has the table)."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


def bad_field(message: str) -> ApiError:
    return ApiError(422, "bad_field", message)


def megabytes(size: int) -> str:
    """A size people read at a glance: MiB from 1 MiB up, bytes below."""
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size:,} bytes"
