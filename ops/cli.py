"""The ``smm`` command: one entry point for every process and operator tool."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys

import grpc
import psycopg
from pydantic import ValidationError

from core.config import Settings, load_settings

# workers.main.NAMES, without importing every worker to print a usage line (a test keeps them equal).
WORKERS = ("scheduler", "dispatch", "provider-sync", "email", "sms", "analytics", "maintenance")


def _sequence(text: str) -> int:
    """A JetStream stream sequence (1 to 2**64-1): NATS answers anything else with a bad request."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"not a dead letter sequence: {text!r} (a number from 1)")
    return value


def _setting_error(loc: tuple[int | str, ...], msg: str) -> str:
    """One bad setting as the operator wrote it: ``SMM_RELAY_BATCH: ...``. A check across settings
    (the pool's bounds) has no field of its own: its message names them, as variables too."""
    if loc:
        return f"SMM_{'_'.join(str(part) for part in loc).upper()}: {msg}"
    msg = msg.removeprefix("Value error, ")
    for field in Settings.model_fields:
        msg = re.sub(rf"\b{field}\b", f"SMM_{field.upper()}", msg)
    return msg


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smm", description="smm: an SMM panel backend")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run the whole system locally (embedded PostgreSQL and NATS)")
    dev.add_argument("--copies", type=int, default=1, help="copies of each process, to show scale-out")

    serve = commands.add_parser("serve", help="run one server process")
    serve.add_argument("what", choices=["grpc", "edge"], help="grpc: the gRPC server; edge: the HTTP API")

    commands.add_parser("migrate", help="apply pending migrations to SMM_DATABASE_URL")

    demo = commands.add_parser("demo-provider", help="run the demo provider (the standard SMM panel API)")
    demo.add_argument("--addr", default="", help="HOST:PORT (default SMM_DEMO_PROVIDER_ADDR)")
    demo.add_argument("--step-s", type=float, default=0.0, help="seconds per order status step")

    worker = commands.add_parser("worker", help="run one worker (scheduler, analytics, maintenance, ...)")
    worker.add_argument("name", help=f"one of: {', '.join(WORKERS)}")

    admin = commands.add_parser("admin", help="operator commands through the gRPC API")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_commands.add_parser("create-user", help="create an account with any role")
    create.add_argument("--email", required=True, help="the account's email address (its sign-in)")
    create.add_argument(
        "--password",
        default=None,
        help="10 to 1024 characters; better left out: given here, every local user sees it (ps) and "
        "the shell history keeps it. Left out, it is read from a prompt, or the first line of stdin",
    )
    create.add_argument("--role", default="user", choices=["user", "support", "admin"], help="default: user")
    create.add_argument("--name", default="", help="display name (optional)")

    email = commands.add_parser("email", help="email templates")
    email_commands = email.add_subparsers(dest="email_command", required=True)
    email_preview = email_commands.add_parser("preview", help="render one email with sample data")
    email_preview.add_argument("name", help="the email (verify_email, order_completed, ...)")
    email_preview.add_argument("--html", action="store_true", help="print the HTML part instead of the text")

    sms = commands.add_parser("sms", help="text message templates")
    sms_commands = sms.add_subparsers(dest="sms_command", required=True)
    sms_preview = sms_commands.add_parser("preview", help="render one text message with sample data")
    sms_preview.add_argument("name", help="the text (phone_verification, order_completed, ...)")

    ledger = commands.add_parser("ledger", help="the wallet ledger")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_commands.add_parser("verify", help="check every ledger invariant (exit 1 when one is broken)")

    dlq = commands.add_parser("dlq", help="inspect and re-drive dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_commands.add_parser("list", help="list dead letters")
    dlq_list.add_argument("--durable", default="", help="only this consumer's")
    dlq_replay = dlq_commands.add_parser("replay", help="send dead letters back to their subject")
    dlq_replay.add_argument(
        "sequences", nargs="*", type=_sequence, help="DLQ sequence numbers (default: all)"
    )
    dlq_replay.add_argument("--durable", default="", help="only this consumer's")
    return parser


# Commands that call the gRPC server as an internal tool.
_TOOLS = frozenset({"admin", "ledger", "dlq"})


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ValidationError as exc:  # one line per bad setting, named as the operator wrote it
        for error in exc.errors():
            print(_setting_error(error["loc"], error["msg"]), file=sys.stderr)
        return 2
    if args.command in _TOOLS and not settings.internal_token.get_secret_value():
        from ops.dev import local_internal_token

        # Next to a `make run`, the tools find the token it generated (the environment wins).
        settings = settings.model_copy(update={"internal_token": local_internal_token(settings)})
    if args.command == "dev":
        from ops.dev import run_dev

        return run_dev(settings, copies=args.copies)
    if args.command == "serve" and args.what == "grpc":
        from core import loop
        from server.main import serve

        loop.run(serve(settings))
        return 0
    if args.command == "serve" and args.what == "edge":
        from edge.app import run

        run(settings)
        return 0
    if args.command == "demo-provider":
        from ops.demo import run_demo_provider

        return run_demo_provider(settings, addr=args.addr, step_s=args.step_s)
    if args.command == "migrate":
        from server.common.migrate import MigrationError, migrate

        if not settings.database_url:
            print("SMM_DATABASE_URL is not set", file=sys.stderr)
            return 2
        try:
            applied = migrate(settings.database_url)
        except MigrationError as exc:
            print(f"migrate: {exc}", file=sys.stderr)
            return 1
        except psycopg.Error as exc:  # unreachable, refused, or a malformed URL (whose text libpq quotes)
            from ops.dev import scrub_url_secret

            # libpq's refusal adds a tab-indented hint on a second line: one line, as every failure
            detail = " ".join(scrub_url_secret(str(exc), settings.database_url).split())
            print(f"migrate: PostgreSQL: {detail}", file=sys.stderr)
            return 1
        print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
        return 0
    if args.command == "worker":
        from workers.main import main as worker_main

        worker_main(settings, args.name)
        return 0
    if args.command == "admin":
        from ops.admin import PasswordsDiffer, create_user, read_password

        if args.password is None:
            try:
                args.password = read_password()
            except PasswordsDiffer:
                print("smm admin: the two passwords differ (nothing was created)", file=sys.stderr)
                return 2
            if not args.password:
                print(
                    "smm admin: no password (type it twice at the prompt, or pipe one line on stdin)",
                    file=sys.stderr,
                )
                return 2
        try:
            user_id = asyncio.run(
                create_user(
                    settings.grpc_dial_target,
                    settings,
                    email=args.email,
                    password=args.password,
                    role=args.role,
                    name=args.name,
                )
            )
        except grpc.aio.AioRpcError as exc:
            print(f"smm admin: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        print(f"created user {user_id} ({args.role})")
        return 0
    if args.command == "email":
        from ops.email_preview import preview

        return preview(settings, args.name, html=args.html)
    if args.command == "sms":
        from ops.email_preview import preview_sms

        return preview_sms(settings, args.name)
    if args.command == "ledger":
        from ops.ledger import verify_ledger

        return asyncio.run(verify_ledger(settings.grpc_dial_target, settings))
    if args.command == "dlq":
        from ops.dlq_cli import run_dlq

        return asyncio.run(run_dlq(settings, args))
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
