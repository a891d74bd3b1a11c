"""The ``smm`` command: one entry point for every process and operator tool."""

from __future__ import annotations

import argparse
import asyncio
import sys

from core.config import load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smm", description="smm: an SMM panel backend")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run the whole system locally (embedded PostgreSQL and NATS)")
    dev.add_argument("--copies", type=int, default=1, help="copies of each process, to show scale-out")

    serve = commands.add_parser("serve", help="run one server process")
    serve.add_argument("what", choices=["grpc", "edge"])

    commands.add_parser("migrate", help="apply pending migrations to SMM_DATABASE_URL")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    if args.command == "dev":
        from ops.dev import run_dev

        return run_dev(settings, copies=args.copies)
    if args.command == "serve" and args.what == "grpc":
        from server.main import serve

        asyncio.run(serve(settings))
        return 0
    if args.command == "serve" and args.what == "edge":
        from edge.app import run

        run(settings)
        return 0
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
        print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
