"""The accounts service's errors (domain ``accounts.smm``)."""

from __future__ import annotations

from server.common.errors import AlreadyExists, Unauthenticated

DOMAIN = "accounts.smm"


def email_taken() -> AlreadyExists:
    return AlreadyExists("an account with this email exists", reason="EMAIL_TAKEN", domain=DOMAIN)


def invalid_login() -> Unauthenticated:
    # One message for a wrong password and an unknown address: no oracle for who has an account.
    return Unauthenticated("the email or the password is wrong", reason="INVALID_LOGIN", domain=DOMAIN)


def account_suspended() -> Unauthenticated:
    return Unauthenticated("this account is suspended", reason="ACCOUNT_SUSPENDED", domain=DOMAIN)


def invalid_credential() -> Unauthenticated:
    return Unauthenticated("the credential is not valid", reason="INVALID_CREDENTIAL", domain=DOMAIN)
