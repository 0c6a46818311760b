"""The `flowmill` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

import app as flowmill
from app.config import Settings, load_settings
from app.errors import FlowmillError


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (FLOWMILL_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (FLOWMILL_PORT, default 8080)")
    parser.add_argument("--home", help="data dir (FLOWMILL_HOME)")
    parser.add_argument("--database-url", help="sqlite:///path or postgresql://... (FLOWMILL_DATABASE_URL)")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        home=getattr(args, "home", None),
        database_url=getattr(args, "database_url", None),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from app.server.run import serve

    return serve(_settings(args))


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.store.migrate import prepare, migrate

    async def run() -> list[str]:
        settings = _settings(args)
        db = await prepare(settings)  # refuses a corrupt or newer database first
        await db.close()
        return await migrate(settings)

    asyncio.run(run())
    print("the schema is up to date")
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    from app.services import build_services
    from app.services.actor import Actor
    from app.store.migrate import prepare

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(f"password for {args.username}: ")

    async def run() -> dict[str, object]:
        settings = _settings(args)
        db = await prepare(settings)
        try:
            services = await build_services(settings, db)
            # The command line is the instance's own operator: it acts as the instance admin.
            operator = Actor(None if not await services.accounts.user_exists() else "cli", "main", "admin", True)
            return await services.accounts.register(operator, args.username, password, args.role)
        finally:
            await db.close()

    user = asyncio.run(run())
    print(f"created {user['username']} ({user['role']}{', instance admin' if user['superadmin'] else ''})")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"flowmill {flowmill.__version__}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="flowmill", description="A self-hosted automation engine in one process.")
    commands = root.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the server")
    _server_flags(serve)
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    _server_flags(migrate)
    migrate.set_defaults(run=cmd_migrate)

    user = commands.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    create = user.add_parser("create", help="create a user (the first becomes instance admin)")
    create.add_argument("username")
    create.add_argument("--role", default=None, help="role in workspace main (viewer, executor, editor, admin)")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    _server_flags(create)
    create.set_defaults(run=cmd_user_create)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(run=cmd_version)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:  # `flowmill` alone starts the server
        args = parser().parse_args(["serve"])
    try:
        return args.run(args)
    except FlowmillError as error:
        print(f"flowmill: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
