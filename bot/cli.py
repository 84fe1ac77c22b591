"""The ``easel`` command: the offline front end on the same service and database."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.core.errors import ConfigError, EaselError, InvalidInput, Refused

EXIT_OK, EXIT_INTERNAL, EXIT_INVALID, EXIT_REFUSED = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="create the database or apply new migrations")
    return parser


async def _db_upgrade(args: argparse.Namespace) -> int:
    from bot import app

    settings = app.settings()
    revision = await app.upgrade_database(settings)
    print(f"Database at {settings.db_url} is at revision {revision}.")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"db": _db_upgrade}[args.command]
    try:
        return asyncio.run(handler(args))
    except ConfigError as exc:
        print(f"easel: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except InvalidInput as exc:
        print(f"easel: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except Refused as exc:
        print(f"easel: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except EaselError as exc:
        print(f"easel: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        return 130
