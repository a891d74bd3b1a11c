"""The one error vocabulary of smm.

A ``DomainError`` carries a gRPC status code, a stable ``reason`` and string ``metadata``; one
interceptor renders it as ``google.rpc.Status`` with ``ErrorInfo`` (and ``BadRequest`` field
violations for invalid arguments). ``(reason, domain)`` is the client contract.

    DomainError
    ├── InvalidArgument        INVALID_ARGUMENT     bad input; carries field violations
    ├── NotFound               NOT_FOUND            missing, or not yours
    ├── AlreadyExists          ALREADY_EXISTS
    ├── FailedPrecondition     FAILED_PRECONDITION  change state first (INSUFFICIENT_FUNDS)
    ├── Aborted                ABORTED              retry the whole operation
    ├── PermissionDenied       PERMISSION_DENIED    the role may never call this
    ├── Unauthenticated        UNAUTHENTICATED
    ├── ResourceExhausted      RESOURCE_EXHAUSTED   rate limits, quotas
    ├── Unavailable            UNAVAILABLE          DB, NATS, pool timeouts
    └── Internal               INTERNAL             never carries details to the client
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str
    reason: str = "INVALID_FIELD"


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = "UNKNOWN"
    domain: str = "smm"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if domain is not None:
            self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        reason: str | None = None,
        domain: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, domain=domain, metadata=metadata)
        self.violations = list(violations or [])
        if self.violations:
            # One pair of keys whichever way the error was built: clients read ``field`` for the
            # (first) bad field and ``fields`` for all of them (BadRequest has each one's words).
            self.metadata.setdefault("field", self.violations[0].field)
            self.metadata.setdefault("fields", ",".join(v.field for v in self.violations))

    @classmethod
    def for_field(
        cls, field: str, description: str, *, domain: str = "smm", reason: str | None = None
    ) -> InvalidArgument:
        return cls(
            f"{field}: {description}",
            violations=[FieldViolation(field, description)],
            reason=reason,
            domain=domain,
        )


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class Internal(DomainError):
    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(self) -> None:
        super().__init__("internal error")


def collect(violations: list[FieldViolation], *, domain: str = "smm") -> None:
    """Raise one INVALID_ARGUMENT naming every bad field, if any."""
    if violations:
        first = violations[0]
        message = (
            f"{first.field}: {first.description}"
            if len(violations) == 1
            else f"{len(violations)} fields are invalid: " + ", ".join(v.field for v in violations)
        )
        raise InvalidArgument(
            message,
            violations=violations,
            domain=domain,
        )
