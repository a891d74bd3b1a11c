"""Server interceptors, outermost first: (tracing, from OpenTelemetry), request id and deadline,
error mapping, (NUL characters refused, server/common/nul_guard.py), (rate limits by IP,
server/common/ratelimit.py), authentication, authorization.
``server/main.py`` runs the stages after tracing as one ``Chain``: one gRPC interceptor per stage
cost a metadata copy and a method handler per stage on every call.

Error mapping sits outside authentication and authorization so that their refusals are rendered
like every other ``DomainError``.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from psycopg_pool import PoolTimeout

from core.logs import request_id_var
from server.common import auth
from server.common.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

INTERNAL_TOKEN_KEY = "x-smm-internal-token"  # noqa: S105 - a header name, not a secret
ACTOR_KEY = "x-smm-actor"
CLIENT_IP_KEY = "x-smm-client-ip"
USER_AGENT_KEY = "x-smm-user-agent"
REQUEST_ID_KEY = "x-request-id"
# Set by the edge (trusted through the internal token) on the reseller endpoint's calls: "reseller".
SOURCE_KEY = "x-smm-source"
RESELLER_SOURCE = "reseller"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SYSTEM_ACTOR = re.compile(r"^system:[a-z0-9][a-z0-9_-]{0,40}$")

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


@dataclass(frozen=True)
class CallInfo:
    method: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class RequestInfo:
    request_id: str
    client_ip: str
    user_agent: str
    deadline_s: float | None


current_request: contextvars.ContextVar[RequestInfo] = contextvars.ContextVar(
    "current_request",
    default=RequestInfo("", "", "", None),  # noqa: B039 - frozen dataclass
)


class _UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the behaviour of unary-unary RPCs; other kinds pass through ``admit``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        call = CallInfo(
            handler_call_details.method,  # type: ignore[attr-defined]
            {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)},  # type: ignore[attr-defined]
        )
        refusal = self.admit(call)
        if refusal is not None:
            return _refusing_handler(refusal)
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner: Behavior = handler.unary_unary  # the aio server's behaviours are coroutines

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self.around(call, request, context, inner)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def admit(self, call: CallInfo) -> DomainError | None:
        return None

    async def around(
        self, call: CallInfo, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        return await inner(request, context)


class Chain(grpc.aio.ServerInterceptor):
    """Several ``_UnaryInterceptor`` stages, outermost first, as ONE gRPC interceptor: the call's
    metadata is read into a ``CallInfo`` once and one method handler wraps the behaviour, where a
    gRPC interceptor per stage did both once per stage on every call. Each stage behaves as it
    would on its own: ``admit`` in order (the first refusal answers the call), then ``around``
    nested in order."""

    def __init__(self, stages: list[_UnaryInterceptor]) -> None:
        self._stages = tuple(stages)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        call = CallInfo(
            handler_call_details.method,  # type: ignore[attr-defined]
            {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)},  # type: ignore[attr-defined]
        )
        for stage in self._stages:
            refusal = stage.admit(call)
            if refusal is not None:
                return _refusing_handler(refusal)
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior: Behavior = _parsed_only(handler.unary_unary)
        for stage in reversed(self._stages):
            behavior = _nest(stage, call, behavior)
        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


@dataclass(frozen=True)
class Undecodable:
    """A request whose bytes are not the method's message (a string field holding invalid UTF-8,
    which clients in other languages send; a truncated field). gRPC answered it UNKNOWN with the
    parser's traceback in the log; the deserializer now hands this on instead of raising, and the
    call ends as INVALID_ARGUMENT inside error mapping, after authentication and rate limits."""

    error: str


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return parse


def _parsed_only(inner: Behavior) -> Behavior:
    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            raise InvalidArgument(
                f"the request is not a valid protobuf message: {request.error}", reason="MALFORMED_REQUEST"
            )
        return await inner(request, context)

    return behavior


def _nest(stage: _UnaryInterceptor, call: CallInfo, inner: Behavior) -> Behavior:
    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await stage.around(call, request, context, inner)

    return behavior


class RequestIdInterceptor(_UnaryInterceptor):
    async def around(
        self, call: CallInfo, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        given = call.metadata.get(REQUEST_ID_KEY, "")
        request_id = given if _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex
        info = RequestInfo(
            request_id=request_id,
            client_ip=call.metadata.get(CLIENT_IP_KEY, ""),
            user_agent=call.metadata.get(USER_AGENT_KEY, "")[:512],
            deadline_s=context.time_remaining(),
        )
        token = current_request.set(info)
        log_token = request_id_var.set(request_id)
        try:
            return await inner(request, context)
        finally:
            request_id_var.reset(log_token)
            current_request.reset(token)


class ErrorMappingInterceptor(_UnaryInterceptor):
    async def around(
        self, call: CallInfo, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        try:
            return await inner(request, context)
        except grpc.aio.AbortError:
            raise
        except DomainError as exc:
            await _abort(context, exc)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.warning("database unavailable in %s: %s", call.method, type(exc).__name__)
            await _abort(context, Unavailable("the database is unavailable", reason="DATABASE_UNAVAILABLE"))
        except Exception:
            log.exception("unhandled error in %s", call.method)
            await _abort(context, Internal())
        raise AssertionError("unreachable: abort raises")  # pragma: no cover


class AuthenticationInterceptor(_UnaryInterceptor):
    def __init__(self, internal_token: str, resolver: auth.CredentialResolver) -> None:
        if not internal_token:
            raise ValueError("the internal token must be configured (SMM_INTERNAL_TOKEN)")
        self._token = internal_token.encode()
        self._resolver = resolver

    def admit(self, call: CallInfo) -> DomainError | None:
        presented = call.metadata.get(INTERNAL_TOKEN_KEY, "").encode()
        if not hmac.compare_digest(presented, self._token):
            return Unauthenticated(
                "the internal credential is missing or wrong", reason="INTERNAL_CREDENTIAL_REQUIRED"
            )
        return None

    async def around(
        self, call: CallInfo, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        principal = await self._principal(call)
        token = auth.current_principal.set(principal)
        try:
            return await inner(request, context)
        finally:
            auth.current_principal.reset(token)

    async def _principal(self, call: CallInfo) -> auth.Principal:
        authorization = call.metadata.get("authorization", "")
        if authorization:
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise Unauthenticated(
                    "use 'Authorization: Bearer <token>'", reason="BAD_AUTHORIZATION_HEADER"
                )
            # The reseller endpoint's ``key`` is an API key, never a session's token: that key sits
            # in form bodies, query strings, scripts and logs; sessions are the web front end's.
            return await self._resolver.resolve(
                credential.strip(),
                client_ip=current_request.get().client_ip,
                api_keys_only=call.metadata.get(SOURCE_KEY) == RESELLER_SOURCE,
            )
        actor = call.metadata.get(ACTOR_KEY, "")
        if actor:
            if not _SYSTEM_ACTOR.match(actor):
                raise InvalidArgument.for_field(ACTOR_KEY, "must look like system:<tool>")
            return auth.Principal(auth.Role.SYSTEM, name=actor)
        return auth.ANONYMOUS


_UNMET_MESSAGES = {
    "EMAIL_NOT_VERIFIED": "confirm your email address first (a link was sent to it)",
    "TOTP_SETUP_REQUIRED": "staff accounts must turn on two-factor sign-in first",
}


class AuthorizationInterceptor(_UnaryInterceptor):
    def __init__(
        self,
        principal_limit: Callable[[auth.Principal, str], Awaitable[None]] | None = None,
        requirements: auth.Requirements = auth.Requirements(),
    ) -> None:
        self._principal_limit = principal_limit
        self._requirements = requirements

    async def around(
        self, call: CallInfo, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        if not call.method.startswith(auth.PLATFORM_PREFIXES):
            who = auth.principal()
            allowed = auth.allowed_roles(call.method)
            if who.role not in allowed:
                if who.role == auth.Role.ANONYMOUS and allowed:
                    raise Unauthenticated("sign in to do this", reason="SIGN_IN_REQUIRED")
                if who.key_owner_role in allowed:  # the owner may, with a session
                    raise auth.staff_call_with_api_key(call.method)
                raise PermissionDenied("your role may not do this", metadata={"method": call.method})
            key_refusal = auth.api_key_refusal(who, call.method)
            if key_refusal is not None:
                raise key_refusal
            unmet = self._requirements.unmet(who, call.method)
            if unmet is not None:
                raise FailedPrecondition(_UNMET_MESSAGES[unmet], reason=unmet, domain="accounts.smm")
            if self._principal_limit is not None:
                await self._principal_limit(who, call.method)
        return await inner(request, context)


# An error travels in gRPC's trailing metadata (16 KiB in all) and echoes what was wrong: input
# thousands of characters long (a map key named in a field path) pushed it past the limit, and the
# caller got RESOURCE_EXHAUSTED instead of its INVALID_ARGUMENT. What it repeats is clipped.
MAX_ERROR_MESSAGE = 1000
MAX_VIOLATION_FIELD = 200
MAX_VIOLATION_DESCRIPTION = 500
# The violations' text in all (the first always goes): about half the limit, the rest is headroom.
MAX_VIOLATIONS_TEXT = 8000
MAX_METADATA_VALUE = 200


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _violations_within(violations: list[FieldViolation]) -> list[error_details_pb2.BadRequest.FieldViolation]:
    kept: list[error_details_pb2.BadRequest.FieldViolation] = []
    size = 0
    for v in violations:
        field, description = (
            _clip(v.field, MAX_VIOLATION_FIELD),
            _clip(v.description, MAX_VIOLATION_DESCRIPTION),
        )
        size += len(field) + len(description)
        if kept and size > MAX_VIOLATIONS_TEXT:
            break  # the message still counts them all ("N fields are invalid: ...", clipped)
        kept.append(
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description, reason=v.reason)
        )
    return kept


def to_status(exc: DomainError) -> status_pb2.Status:
    info = any_pb2.Any()
    metadata = {
        key[:MAX_VIOLATION_FIELD]: _clip(value, MAX_METADATA_VALUE) for key, value in exc.metadata.items()
    }
    info.Pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=exc.domain, metadata=metadata))
    details = [info]
    if isinstance(exc, InvalidArgument) and exc.violations:
        bad_request = any_pb2.Any()
        bad_request.Pack(error_details_pb2.BadRequest(field_violations=_violations_within(exc.violations)))
        details.append(bad_request)
    retry_delay = getattr(exc, "retry_delay", None)
    if retry_delay is not None:
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=retry_delay))
        details.append(retry)
    return status_pb2.Status(
        code=exc.code.value[0], message=_clip(exc.message, MAX_ERROR_MESSAGE), details=details
    )


async def _abort(context: grpc.aio.ServicerContext, exc: DomainError) -> None:
    await context.abort_with_status(rpc_status.to_status(to_status(exc)))


def _refusing_handler(error: DomainError) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _abort(context, error)

    return grpc.unary_unary_rpc_method_handler(refuse)
