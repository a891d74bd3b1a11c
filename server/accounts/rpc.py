"""AccountsService servicer: proto <-> domain, nothing else."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from smm.v1 import accounts_service_pb2 as pb
from smm.v1 import accounts_service_pb2_grpc as pb_grpc

from server.accounts.admin import UserAdmin
from server.accounts.apikeys import ApiKeys, IssuedKey
from server.accounts.emails import AccountEmails
from server.accounts.errors import DOMAIN
from server.accounts.logic import AccountsLogic, Profiles, SignedIn
from server.accounts.phones import Phones
from server.accounts.repo import ApiKeyRow, ProfileRow, SessionRow, UserRow
from server.accounts.totp import TwoFactor
from server.common import auth
from server.common.convert import mask_paths, timestamp
from server.common.errors import InvalidArgument
from server.common.interceptors import current_request
from server.common.money import format_bps, parse_percent_bps
from server.common.pagetoken import PageTokenCodec, newest_first_page, page_size


def user_to_proto(row: UserRow) -> pb.User:
    return pb.User(
        id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        timezone=row.timezone,
        email_verified=row.email_verified_at is not None,
        create_time=timestamp(row.create_time),
        status=row.status,
        discount_percent=format_percent(row.discount_bps),
        two_factor_enabled=row.totp_enabled_at is not None,
        pending_email=row.pending_email,
    )


def format_percent(bps: int) -> str:
    return format_bps(bps)


def parse_percent(value: str) -> int:
    return parse_percent_bps(value, field="user.discount_percent")


MAX_USAGE_DAYS = 366
USER_FIELDS = frozenset({"email", "name", "role", "discount_percent"})


def signed_in(result: SignedIn) -> pb.LoginResponse:
    return pb.LoginResponse(
        token=result.token, expire_time=timestamp(result.expire_time), user=user_to_proto(result.user)
    )


def api_key_to_proto(row: ApiKeyRow) -> pb.ApiKey:
    return pb.ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        allowed_ips=row.allowed_ips,
        create_time=timestamp(row.create_time),
        last_used_time=timestamp(row.last_used_time),
        expire_time=timestamp(row.expire_time),
        revoke_time=timestamp(row.revoke_time),
    )


def issued(result: IssuedKey) -> pb.CreateApiKeyResponse:
    return pb.CreateApiKeyResponse(api_key=api_key_to_proto(result.key), secret=result.secret)


PROFILE_FIELDS = frozenset({"name", "timezone", "notification_preferences"})


def preferences_to_dict(preferences: struct_pb2.Struct) -> dict[str, Any]:
    """The map as JSON values. A number JSON cannot carry (1e999 arrives as Infinity, a gRPC caller
    may send NaN) is the caller's mistake: protobuf refuses to render it, and PostgreSQL's jsonb
    could not store it either."""
    try:
        return json_format.MessageToDict(preferences)
    except ValueError:
        raise InvalidArgument.for_field(
            "profile.notification_preferences", "numbers must be finite", domain=DOMAIN
        ) from None


def profile_to_proto(row: ProfileRow) -> pb.Profile:
    profile = pb.Profile(
        email=row.email,
        name=row.name,
        timezone=row.timezone,
        phone=row.phone,
        phone_verified=row.phone_verified,
    )
    profile.notification_preferences.SetInParent()  # an empty map is still rendered as {}
    profile.notification_preferences.update(row.notification_preferences)
    return profile


def session_to_proto(row: SessionRow, current_id: int | None) -> pb.Session:
    return pb.Session(
        id=row.id,
        create_time=timestamp(row.create_time),
        expire_time=timestamp(row.expire_time),
        client_ip=row.client_ip,
        user_agent=row.user_agent,
        current=row.id == current_id,
    )


class AccountsServicer(pb_grpc.AccountsServiceServicer):
    def __init__(
        self,
        logic: AccountsLogic,
        api_keys: ApiKeys,
        profiles: Profiles,
        admin: UserAdmin,
        tokens: PageTokenCodec,
        emails: AccountEmails,
        two_factor: TwoFactor,
        phones: Phones,
    ) -> None:
        self._logic = logic
        self._api_keys = api_keys
        self._profiles = profiles
        self._admin = admin
        self._tokens = tokens
        self._emails = emails
        self._two_factor = two_factor
        self._phones = phones

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoginResponse:
        info = current_request.get()
        result = await self._logic.register(
            email=request.email,
            password=request.password,
            name=request.name,
            client_ip=info.client_ip,
            user_agent=info.user_agent,
        )
        return signed_in(result)

    async def Login(self, request: pb.LoginRequest, context: grpc.aio.ServicerContext) -> pb.LoginResponse:
        info = current_request.get()
        result = await self._logic.login(
            email=request.email,
            password=request.password,
            totp=request.totp,
            client_ip=info.client_ip,
            user_agent=info.user_agent,
        )
        return signed_in(result)

    async def Logout(self, request: pb.LogoutRequest, context: grpc.aio.ServicerContext) -> pb.LogoutResponse:
        await self._logic.logout(auth.principal())
        return pb.LogoutResponse()

    async def GetMe(self, request: pb.GetMeRequest, context: grpc.aio.ServicerContext) -> pb.User:
        return user_to_proto(await self._logic.me(auth.principal()))

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        return issued(await self._api_keys.create(auth.principal(), request.name, list(request.allowed_ips)))

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListApiKeysResponse:
        rows = await self._api_keys.list(auth.principal())
        return pb.ListApiKeysResponse(api_keys=[api_key_to_proto(r) for r in rows])

    async def RotateApiKey(
        self, request: pb.RotateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        return issued(await self._api_keys.rotate(auth.principal(), request.id))

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApiKey:
        return api_key_to_proto(await self._api_keys.revoke(auth.principal(), request.id))

    async def CreateUser(self, request: pb.CreateUserRequest, context: grpc.aio.ServicerContext) -> pb.User:
        row = await self._logic.create_user(
            email=request.email, password=request.password, name=request.name, role=request.role or "user"
        )
        return user_to_proto(row)

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoginResponse:
        info = current_request.get()
        result = await self._profiles.change_password(
            auth.principal(),
            request.current_password,
            request.new_password,
            client_ip=info.client_ip,
            user_agent=info.user_agent,
        )
        return signed_in(result)

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.Profile:
        return profile_to_proto(await self._profiles.profile(auth.principal()))

    async def UpdateProfile(
        self, request: pb.UpdateProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.Profile:
        paths = mask_paths(request.update_mask, request.profile, allowed=PROFILE_FIELDS, prefix="profile")
        changes: dict[str, object] = {}
        for path in paths:
            if path == "notification_preferences":
                changes[path] = preferences_to_dict(request.profile.notification_preferences)
            else:
                changes[path] = getattr(request.profile, path)
        return profile_to_proto(await self._profiles.update_profile(auth.principal(), changes))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        who = auth.principal()
        rows = await self._profiles.sessions(who)
        return pb.ListSessionsResponse(sessions=[session_to_proto(r, who.session_id) for r in rows])

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeSessionResponse:
        await self._profiles.revoke_session(auth.principal(), request.id)
        return pb.RevokeSessionResponse()

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUsersResponse:
        size = page_size(request.page_size, default=50, maximum=500)
        filters = {"query": request.query, "role": request.role, "status": request.status}
        rows, token = await newest_first_page(
            self._tokens,
            request.page_token,
            filters,
            size,
            lambda before_id, limit: self._admin.list(**filters, before_id=before_id, limit=limit),
        )
        return pb.ListUsersResponse(users=[user_to_proto(r) for r in rows], next_page_token=token)

    async def GetUser(self, request: pb.GetUserRequest, context: grpc.aio.ServicerContext) -> pb.User:
        return user_to_proto(await self._admin.get(request.id))

    async def UpdateUser(self, request: pb.UpdateUserRequest, context: grpc.aio.ServicerContext) -> pb.User:
        paths = mask_paths(request.update_mask, request.user, allowed=USER_FIELDS, prefix="user")
        changes: dict[str, object] = {}
        for path in paths:
            if path == "discount_percent":
                changes["discount_bps"] = parse_percent(request.user.discount_percent)
            else:
                changes[path] = getattr(request.user, path)
        return user_to_proto(await self._admin.update(request.user.id, changes))

    async def SuspendUser(self, request: pb.SuspendUserRequest, context: grpc.aio.ServicerContext) -> pb.User:
        return user_to_proto(await self._admin.set_status(request.id, "suspended", "user.suspended"))

    async def ReactivateUser(
        self, request: pb.ReactivateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.User:
        return user_to_proto(await self._admin.set_status(request.id, "active", "user.reactivated"))

    async def DeleteUser(self, request: pb.DeleteUserRequest, context: grpc.aio.ServicerContext) -> pb.User:
        return user_to_proto(await self._admin.delete(request.id))

    async def GetApiKeyUsage(
        self, request: pb.GetApiKeyUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetApiKeyUsageResponse:
        if not 0 <= request.days <= MAX_USAGE_DAYS:
            raise InvalidArgument.for_field("days", f"must be 1 to {MAX_USAGE_DAYS}")
        rows = await self._api_keys.usage_days(auth.principal(), request.id, request.days or 30)
        return pb.GetApiKeyUsageResponse(
            days=[pb.ApiKeyUsageDay(day=r.day.isoformat(), calls=r.calls) for r in rows],
            total_calls=sum(r.calls for r in rows),
        )

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequestPasswordResetResponse:
        await self._emails.request_password_reset(request.email)
        return pb.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: pb.ResetPasswordRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetPasswordResponse:
        await self._emails.reset_password(request.token, request.new_password)
        return pb.ResetPasswordResponse()

    async def VerifyEmail(
        self, request: pb.VerifyEmailRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyEmailResponse:
        return pb.VerifyEmailResponse(email=await self._emails.verify_email(request.token))

    async def SendVerificationEmail(
        self, request: pb.SendVerificationEmailRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendVerificationEmailResponse:
        await self._emails.send_verification(auth.principal())
        return pb.SendVerificationEmailResponse()

    async def ChangeEmail(
        self, request: pb.ChangeEmailRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangeEmailResponse:
        pending = await self._emails.change_email(auth.principal(), request.new_email, request.password)
        return pb.ChangeEmailResponse(pending_email=pending)

    async def SetupTotp(
        self, request: pb.SetupTotpRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetupTotpResponse:
        who = auth.principal()
        secret, uri = await self._two_factor.setup(who, who.name)
        return pb.SetupTotpResponse(secret=secret, otpauth_uri=uri)

    async def EnableTotp(
        self, request: pb.EnableTotpRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecoveryCodesResponse:
        return pb.RecoveryCodesResponse(
            recovery_codes=await self._two_factor.enable(auth.principal(), request.password, request.code)
        )

    async def DisableTotp(
        self, request: pb.DisableTotpRequest, context: grpc.aio.ServicerContext
    ) -> pb.DisableTotpResponse:
        await self._two_factor.disable(auth.principal(), request.password, request.code)
        return pb.DisableTotpResponse()

    async def RegenerateRecoveryCodes(
        self, request: pb.RegenerateRecoveryCodesRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecoveryCodesResponse:
        codes = await self._two_factor.regenerate(auth.principal(), request.code)
        return pb.RecoveryCodesResponse(recovery_codes=codes)

    async def PrepareAccountEmail(
        self, request: pb.PrepareAccountEmailRequest, context: grpc.aio.ServicerContext
    ) -> pb.PrepareAccountEmailResponse:
        prepared = await self._emails.prepare(request.user_id, request.kind, request.request_id, request.to)
        return pb.PrepareAccountEmailResponse(
            send=prepared.send,
            skip_reason=prepared.skip_reason,
            to=prepared.to,
            name=prepared.name,
            kind=request.kind,
            link=prepared.link,
            link_expire_time=timestamp(prepared.link_expire_time),
            new_email=prepared.new_email,
        )

    async def SetPhone(self, request: pb.SetPhoneRequest, context: grpc.aio.ServicerContext) -> pb.Profile:
        return profile_to_proto(await self._phones.set_phone(auth.principal(), request.phone))

    async def VerifyPhone(
        self, request: pb.VerifyPhoneRequest, context: grpc.aio.ServicerContext
    ) -> pb.Profile:
        return profile_to_proto(await self._phones.verify_phone(auth.principal(), request.code))

    async def RemovePhone(
        self, request: pb.RemovePhoneRequest, context: grpc.aio.ServicerContext
    ) -> pb.Profile:
        return profile_to_proto(await self._phones.remove_phone(auth.principal()))

    async def PrepareAccountSms(
        self, request: pb.PrepareAccountSmsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PrepareAccountSmsResponse:
        prepared = await self._phones.prepare(request.user_id, request.kind, request.to)
        return pb.PrepareAccountSmsResponse(
            send=prepared.send,
            skip_reason=prepared.skip_reason,
            to=prepared.to,
            name=prepared.name,
            kind=request.kind,
            code=prepared.code,
            code_expire_time=timestamp(prepared.code_expire_time),
        )
