"""Who is calling, and what each RPC allows.

The edge, the workers and internal tools all prove themselves with the internal token (checked in
the authentication interceptor). On top of that, the end user's credential (``authorization``
metadata: a session token or an API key) becomes the ``Principal``. Internal tools act as
``system:<tool>``. ``RPC_ROLES`` is the one table of who may call what; an RPC missing from it
is refused (fail closed), and a unit test keeps it complete. ``API_KEY_REFUSED``, next to it,
names the RPCs a person may make only with a session, never with one of their API keys.
"""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass
from typing import Protocol

from server.common.errors import PermissionDenied


class Role(enum.StrEnum):
    ANONYMOUS = "anonymous"
    USER = "user"
    SUPPORT = "support"
    ADMIN = "admin"
    SYSTEM = "system"


@dataclass(frozen=True)
class Principal:
    role: Role
    user_id: int | None = None
    name: str = ""  # "system:<tool>" for internal tools, the user's email otherwise
    api_key_id: int | None = None
    key_owner_role: Role | None = None  # through an API key: the owner's own role (keys act as USER)
    session_id: int | None = None
    # Only people can be short of these; tools and anonymous callers count as meeting them.
    email_verified: bool = True
    totp_enabled: bool = True

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.SUPPORT, Role.ADMIN, Role.SYSTEM)

    @property
    def actor(self) -> str:
        if self.role == Role.SYSTEM:
            return self.name
        if self.user_id is not None:
            return f"user:{self.user_id}"
        return "anonymous"


ANONYMOUS = Principal(Role.ANONYMOUS)

current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "current_principal", default=ANONYMOUS
)


def principal() -> Principal:
    return current_principal.get()


class CredentialResolver(Protocol):
    """Turns an end-user credential (the part after "Bearer ") into a principal, or raises
    Unauthenticated. The accounts service implements it with sessions and API keys;
    ``api_keys_only`` refuses a session's token as it refuses an unknown credential (the reseller
    endpoint, whose ``key`` travels in form bodies and query strings)."""

    async def resolve(self, credential: str, *, client_ip: str, api_keys_only: bool = False) -> Principal: ...


EVERYONE = frozenset(Role)
SIGNED_IN = frozenset({Role.USER, Role.SUPPORT, Role.ADMIN, Role.SYSTEM})
PEOPLE = frozenset({Role.USER, Role.SUPPORT, Role.ADMIN})  # signed-in humans, not tools
STAFF_READ = frozenset({Role.SUPPORT, Role.ADMIN, Role.SYSTEM})
STAFF_WRITE = frozenset({Role.ADMIN, Role.SYSTEM})
SYSTEM_ONLY = frozenset({Role.SYSTEM})

RPC_ROLES: dict[str, frozenset[Role]] = {
    "/smm.v1.AccountsService/Register": EVERYONE,
    "/smm.v1.AccountsService/Login": EVERYONE,
    "/smm.v1.AccountsService/Logout": PEOPLE,
    "/smm.v1.AccountsService/GetMe": PEOPLE,
    "/smm.v1.AccountsService/CreateUser": STAFF_WRITE,
    "/smm.v1.AccountsService/ListUsers": STAFF_READ,
    "/smm.v1.AccountsService/GetUser": STAFF_READ,
    "/smm.v1.AccountsService/UpdateUser": STAFF_WRITE,
    "/smm.v1.AccountsService/SuspendUser": STAFF_WRITE,
    "/smm.v1.AccountsService/ReactivateUser": STAFF_WRITE,
    "/smm.v1.AccountsService/DeleteUser": STAFF_WRITE,
    "/smm.v1.AccountsService/ChangePassword": PEOPLE,
    "/smm.v1.AccountsService/GetProfile": PEOPLE,
    "/smm.v1.AccountsService/UpdateProfile": PEOPLE,
    "/smm.v1.AccountsService/ListSessions": PEOPLE,
    "/smm.v1.AccountsService/RevokeSession": PEOPLE,
    "/smm.v1.AccountsService/CreateApiKey": PEOPLE,
    "/smm.v1.AccountsService/ListApiKeys": PEOPLE,
    "/smm.v1.AccountsService/RotateApiKey": PEOPLE,
    "/smm.v1.AccountsService/RevokeApiKey": PEOPLE,
    "/smm.v1.AccountsService/GetApiKeyUsage": PEOPLE,
    "/smm.v1.AccountsService/RequestPasswordReset": EVERYONE,
    "/smm.v1.AccountsService/ResetPassword": EVERYONE,
    "/smm.v1.AccountsService/VerifyEmail": EVERYONE,
    "/smm.v1.AccountsService/SendVerificationEmail": PEOPLE,
    "/smm.v1.AccountsService/ChangeEmail": PEOPLE,
    "/smm.v1.AccountsService/SetupTotp": PEOPLE,
    "/smm.v1.AccountsService/EnableTotp": PEOPLE,
    "/smm.v1.AccountsService/DisableTotp": PEOPLE,
    "/smm.v1.AccountsService/RegenerateRecoveryCodes": PEOPLE,
    "/smm.v1.AccountsService/PrepareAccountEmail": SYSTEM_ONLY,
    "/smm.v1.AccountsService/SetPhone": PEOPLE,
    "/smm.v1.AccountsService/VerifyPhone": PEOPLE,
    "/smm.v1.AccountsService/RemovePhone": PEOPLE,
    "/smm.v1.AccountsService/PrepareAccountSms": SYSTEM_ONLY,
    "/smm.v1.SystemService/GetHealth": EVERYONE,
    "/smm.v1.SystemService/RunJob": STAFF_WRITE,
    "/smm.v1.SystemService/RecordEvent": SYSTEM_ONLY,
    "/smm.v1.SystemService/ListEventCounts": STAFF_READ,
    "/smm.v1.SystemService/ListAuditEvents": STAFF_READ,
    "/smm.v1.CatalogService/ListCategories": EVERYONE,
    "/smm.v1.CatalogService/ListServices": EVERYONE,
    "/smm.v1.CatalogService/GetService": EVERYONE,
    "/smm.v1.CatalogService/CreateCategory": STAFF_WRITE,
    "/smm.v1.CatalogService/UpdateCategory": STAFF_WRITE,
    "/smm.v1.CatalogService/CreateService": STAFF_WRITE,
    "/smm.v1.CatalogService/UpdateService": STAFF_WRITE,
    "/smm.v1.CatalogService/ListAdminServices": STAFF_READ,
    "/smm.v1.CatalogService/ListAdminCategories": STAFF_READ,
    "/smm.v1.CatalogService/GetAdminService": STAFF_READ,
    "/smm.v1.CatalogService/DeleteService": STAFF_WRITE,
    "/smm.v1.CatalogService/DeleteCategory": STAFF_WRITE,
    "/smm.v1.CatalogService/SetServiceProviders": STAFF_WRITE,
    "/smm.v1.CatalogService/AcceptServicePrice": STAFF_WRITE,
    "/smm.v1.CatalogService/BulkUpdateServices": STAFF_WRITE,
    "/smm.v1.CatalogService/ListPricingRules": STAFF_READ,
    "/smm.v1.CatalogService/CreatePricingRule": STAFF_WRITE,
    "/smm.v1.CatalogService/UpdatePricingRule": STAFF_WRITE,
    "/smm.v1.CatalogService/DeletePricingRule": STAFF_WRITE,
    "/smm.v1.WalletService/GetBalance": PEOPLE,
    "/smm.v1.WalletService/ListTransactions": PEOPLE,
    "/smm.v1.WalletService/CreateBalanceAdjustment": STAFF_WRITE,
    "/smm.v1.WalletService/GetUserBalance": STAFF_READ,
    "/smm.v1.WalletService/VerifyLedger": STAFF_READ,
    "/smm.v1.OrdersService/CreateOrder": PEOPLE,
    "/smm.v1.OrdersService/CreateMassOrder": PEOPLE,
    "/smm.v1.OrdersService/ListOrders": PEOPLE,
    "/smm.v1.OrdersService/GetOrder": PEOPLE,
    "/smm.v1.OrdersService/GetOrderStats": PEOPLE,
    "/smm.v1.OrdersService/BatchGetOrders": PEOPLE,
    "/smm.v1.OrdersService/RefillOrder": PEOPLE,
    "/smm.v1.OrdersService/BatchGetRefills": PEOPLE,
    "/smm.v1.OrdersService/CancelOrder": PEOPLE,
    "/smm.v1.OrdersService/ListAllOrders": STAFF_READ,
    "/smm.v1.OrdersService/GetAnyOrder": STAFF_READ,
    "/smm.v1.OrdersService/ListOrderProviderLog": STAFF_READ,
    "/smm.v1.OrdersService/SetOrderStatus": STAFF_WRITE,
    "/smm.v1.OrdersService/ResolveOrder": STAFF_WRITE,
    "/smm.v1.OrdersService/EndRefill": STAFF_WRITE,
    "/smm.v1.OrdersService/ListUpstreamCandidates": STAFF_READ,
    "/smm.v1.OrdersService/ResubmitOrder": STAFF_WRITE,
    # Machines: the signature, checked by the service, is the credential.
    "/smm.v1.OrdersService/ReceiveProviderWebhook": EVERYONE,
    "/smm.v1.OrdersService/SubmitOrder": SYSTEM_ONLY,
    "/smm.v1.OrdersService/PollOrders": SYSTEM_ONLY,
    "/smm.v1.NotificationsService/PlanNotifications": SYSTEM_ONLY,
    "/smm.v1.NotificationsService/RecordDelivery": SYSTEM_ONLY,
    # Machines and mail clients: the Svix or Twilio signature or the signed token is the credential.
    "/smm.v1.NotificationsService/ReceiveResendWebhook": EVERYONE,
    "/smm.v1.NotificationsService/ReceiveTwilioWebhook": EVERYONE,
    "/smm.v1.NotificationsService/Unsubscribe": EVERYONE,
    "/smm.v1.NotificationsService/DescribeUnsubscribe": EVERYONE,
    "/smm.v1.NotificationsService/ListUserNotifications": STAFF_READ,
    "/smm.v1.ProvidersService/CreateProvider": STAFF_WRITE,
    "/smm.v1.ProvidersService/ListProviders": STAFF_READ,
    "/smm.v1.ProvidersService/GetProvider": STAFF_READ,
    "/smm.v1.ProvidersService/UpdateProvider": STAFF_WRITE,
    "/smm.v1.ProvidersService/DeleteProvider": STAFF_WRITE,
    "/smm.v1.ProvidersService/TestProviderConnection": STAFF_READ,
    "/smm.v1.ProvidersService/ListUpstreamServices": STAFF_READ,
    "/smm.v1.ProvidersService/SyncProvider": STAFF_WRITE,
    "/smm.v1.ProvidersService/PreviewSync": STAFF_READ,
    "/smm.v1.ProvidersService/GetSyncRun": STAFF_READ,
    "/smm.v1.ProvidersService/ListSyncRuns": STAFF_READ,
    "/smm.v1.ProvidersService/RunSync": SYSTEM_ONLY,
    "/smm.v1.ProvidersService/SetExchangeRate": STAFF_WRITE,
    "/smm.v1.ProvidersService/ListExchangeRates": STAFF_READ,
}

# Managing the account itself takes a session: its keys, sessions, password, address, phone,
# two-factor sign-in and settings. API keys are handed to scripts and to other panels' servers, so
# a key (even one locked to an address) must not mint keys without an allow-list, end its owner's
# sessions, turn on two-factor sign-in to lock the owner out, or change the password, address or
# notification settings. A key keeps all an API client needs: the catalog, orders, the wallet and
# reading its account (GetMe, GetProfile). Refused with 403 API_KEY_NOT_ALLOWED; docs/ACCESS.md
# lists the routes, and tests/unit/test_access_doc.py keeps that list equal to this one.
API_KEY_REFUSED = frozenset(
    f"/smm.v1.AccountsService/{name}"
    for name in (
        "Logout", "ChangePassword", "UpdateProfile", "ListSessions", "RevokeSession",
        "CreateApiKey", "ListApiKeys", "RotateApiKey", "RevokeApiKey", "GetApiKeyUsage",
        "SendVerificationEmail", "ChangeEmail",
        "SetupTotp", "EnableTotp", "DisableTotp", "RegenerateRecoveryCodes",
        "SetPhone", "VerifyPhone", "RemovePhone",
    )
)  # fmt: skip

# What an account may still do while it falls short of an operator requirement (a verified
# address, two-factor sign-in for staff): look at itself, sign out, and meet the requirement.
ACCOUNT_SETUP_RPCS = frozenset(
    f"/smm.v1.AccountsService/{name}"
    for name in (
        "Logout", "GetMe", "GetProfile", "UpdateProfile", "ChangePassword", "ListSessions", "RevokeSession",
        "SendVerificationEmail", "ChangeEmail", "SetupTotp", "EnableTotp",
    )
)  # fmt: skip


@dataclass(frozen=True)
class Requirements:
    """Operator settings that hold an account back until it meets them."""

    email_verification: bool = False
    staff_totp: bool = False

    def unmet(self, who: Principal, rpc: str) -> str | None:
        """The reason the principal may not make this call yet, or None."""
        if who.role not in PEOPLE or rpc in ACCOUNT_SETUP_RPCS or allowed_roles(rpc) == EVERYONE:
            return None
        if self.email_verification and not who.email_verified:
            return "EMAIL_NOT_VERIFIED"
        if self.staff_totp and who.role in (Role.SUPPORT, Role.ADMIN) and not who.totp_enabled:
            return "TOTP_SETUP_REQUIRED"
        return None


# Infrastructure services that need only the internal token, not a role.
PLATFORM_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def allowed_roles(rpc: str) -> frozenset[Role]:
    return RPC_ROLES.get(rpc, frozenset())


def _key_refused(message: str, rpc: str) -> PermissionDenied:
    return PermissionDenied(
        message, reason="API_KEY_NOT_ALLOWED", domain="accounts.smm", metadata={"method": rpc}
    )


def staff_call_with_api_key(rpc: str) -> PermissionDenied:
    """API keys act as customers (``Role.USER``) whatever their owner's role: staff tools take a
    signed-in session, which the staff second-factor requirement covers."""
    return _key_refused("API keys act as a customer; staff tools need a signed-in session", rpc)


def api_key_refusal(who: Principal, rpc: str) -> PermissionDenied | None:
    """Why ``who`` may not make this call with an API key, or None."""
    if who.api_key_id is None or rpc not in API_KEY_REFUSED:
        return None
    return _key_refused("API keys may not manage the account; sign in and use a session for this", rpc)
