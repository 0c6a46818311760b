"""The `flowmill` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import TYPE_CHECKING

import app as flowmill
from app.config import Settings, load_settings
from app.errors import FlowmillError

if TYPE_CHECKING:
    from app.client import Client


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
    """Bring the schema up to date (what `serve` does at start), and say so."""
    from app.store.migrate import prepare

    async def run() -> None:
        db = await prepare(_settings(args))  # refuses a corrupt or newer database, migrates
        await db.close()

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


def _client(args: argparse.Namespace) -> Client:
    from app.client import Client
    from app.config import load_remote

    remote = load_remote(url=args.url, token=args.token, workspace=args.workspace)
    return Client(remote)


def cmd_run(args: argparse.Namespace) -> int:
    """Run a script on the server, printing its log lines as they come, then its result."""
    import json

    from app.client import parse_arg

    body = dict(parse_arg(a) for a in args.arg)
    with _client(args) as client:
        created = client.call("POST", f"/jobs/run/p/{args.path}", json=body, headers={"X-Flowmill-Trigger": "cli"})
        for _event, line in client.events(f"/jobs/{created['id']}/logs/stream"):
            if _event == "log":
                print(line, file=sys.stderr)
        job = client.call("GET", f"/jobs/{created['id']}")
    if job["status"] == "SUCCESS":
        print(json.dumps(job["result"], indent=2, ensure_ascii=False))
        return 0
    error = job.get("error") or {}
    print(f"flowmill: the run ended {job['status']}: {error.get('message', '')}", file=sys.stderr)
    if error.get("traceback"):
        print(error["traceback"], file=sys.stderr)
    return 1


def cmd_sync(args: argparse.Namespace) -> int:
    """Push a folder of scripts to the server, or pull the server's into a folder."""
    from pathlib import Path

    from app import scriptfiles

    root = Path(args.folder)
    with _client(args) as client:
        move = scriptfiles.push if args.direction == "push" else scriptfiles.pull
        counts = move(client, root, dry_run=args.dry_run)
    verb = "would change" if args.dry_run else "changed"
    print(f"{counts['new']} new, {counts['changed']} {verb}, {counts['unchanged']} unchanged", file=sys.stderr)
    return 0


def cmd_generate_metadata(args: argparse.Namespace) -> int:
    """Write <script>.script.yaml and <script>.lock beside every script of a folder."""
    from pathlib import Path

    from app.scriptfiles import generate_metadata

    count = generate_metadata(Path(args.folder))
    print(f"wrote metadata for {count} script(s)", file=sys.stderr)
    return 0


def cmd_resource_types(args: argparse.Namespace) -> int:
    """List the resource types the server knows (built-in and the workspace's own)."""
    import json

    with _client(args) as client:
        for item in client.call("GET", "/resource_types"):
            origin = "built-in" if item["builtIn"] else "workspace"
            print(f"{item['name']:<18} {origin:<9} {item['description']}")
            if args.schema:
                print(json.dumps(item["schema"], indent=2))
    return 0


def _remote_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the server (FLOWMILL_URL, default http://127.0.0.1:8080)")
    parser.add_argument("--token", help="an API token or session token (FLOWMILL_TOKEN)")
    parser.add_argument("--workspace", help="workspace (FLOWMILL_WORKSPACE, default main)")


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

    run = commands.add_parser("run", help="run a script on the server and print its logs and result")
    run.add_argument("path", help="the script's path, e.g. f/demo/hello")
    run.add_argument("--arg", action="append", default=[], metavar="K=V", help="an argument (V read as JSON if it is JSON)")
    _remote_flags(run)
    run.set_defaults(run=cmd_run)

    sync = commands.add_parser("sync", help="move a folder of scripts to or from a server")
    sync.add_argument("direction", choices=["push", "pull"])
    sync.add_argument("folder", nargs="?", default=".", help="the folder holding f/ and u/ (default: here)")
    sync.add_argument("--dry-run", action="store_true", help="only show what would change")
    _remote_flags(sync)
    sync.set_defaults(run=cmd_sync)

    metadata = commands.add_parser("generate-metadata", help="write .script.yaml and .lock beside each script")
    metadata.add_argument("folder", nargs="?", default=".")
    metadata.set_defaults(run=cmd_generate_metadata)

    resource_type = commands.add_parser("resource-type", help="resource types").add_subparsers(dest="rt_command", required=True)
    rt_list = resource_type.add_parser("list", help="list resource types")
    rt_list.add_argument("--schema", action="store_true", help="print each type's JSON schema")
    _remote_flags(rt_list)
    rt_list.set_defaults(run=cmd_resource_types)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(run=cmd_version)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_pip"]:
        # The frozen program's own pip (it has no `python -m pip`): scripts' dependencies are
        # installed with it. Kept out of argparse, which would read pip's options as ours.
        from pip._internal.cli.main import main as pip_main

        return pip_main(argv[1:])
    if argv[:1] == ["_forkserver"]:  # started by `serve`, not by hand; it parses its own options
        from app.runtimes.python.child import main as forkserver

        return forkserver(argv[1:])
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
