"""The `flowmill` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import app as flowmill
from app.config import Settings, load_settings
from app.errors import FlowmillError

if TYPE_CHECKING:
    from rich.progress import Progress

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

    settings = _settings(args)

    async def run() -> None:
        db = await prepare(settings, vacuum=args.vacuum)  # refuses a corrupt or newer database, migrates
        await db.close()

    with _owning(settings):  # not under a running server (app.server.owner says why)
        asyncio.run(run())
    print("the schema is up to date")
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    from app.services import build_services
    from app.services.actor import Actor
    from app.store.migrate import prepare

    password = _password(args.password_stdin, f"password for {args.username}: ")

    settings = _settings(args)

    async def run() -> dict[str, object]:
        db = await prepare(settings)
        try:
            services = await build_services(settings, db)
            # The command line is the instance's own operator: it acts as the instance admin.
            operator = Actor(None if not await services.accounts.user_exists() else "cli", "main", "admin", True)
            return await services.accounts.register(operator, args.username, password, args.role)
        finally:
            await db.close()

    with _owning(settings):  # it migrates, as `serve` does: not under a running server
        user = asyncio.run(run())
    print(f"created {user['username']} ({user['role']}{', instance admin' if user['superadmin'] else ''})")
    return 0


@contextlib.contextmanager
def _owning(settings: Settings) -> Iterator[None]:
    """Hold the data dir as `serve` does while a command changes its database."""
    from app.server.owner import claim

    owner = claim(settings)
    try:
        yield
    finally:
        owner.release()


EXIT_USE_PG_DUMP = 2


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the SQLite database, consistent, while the server runs; on PostgreSQL, say how to
    with pg_dump (exit status 2)."""
    from pathlib import Path

    settings = _settings(args)
    if not settings.is_sqlite:
        from app.store.backup import pg_dump_command

        print("Flowmill's database is on PostgreSQL: back it up with pg_dump, e.g.\n\n"
              f"    {pg_dump_command(settings.database_url, args.path)}\n\n"
              "(the password is not shown: pg_dump takes it from PGPASSWORD or ~/.pgpass). "
              "Restore with pg_restore.")
        return EXIT_USE_PG_DUMP
    from app.store.backup import backup_sqlite

    with _progress() as progress:
        task = progress.add_task("backing up", total=None)
        copied = backup_sqlite(settings.sqlite_path, Path(args.path), force=args.force,
                               progress=lambda done, total: progress.update(task, completed=done, total=total))
    key = "FLOWMILL_MASTER_KEY" if settings.master_key else settings.home / "master.key"
    print(f"backed up {settings.sqlite_path} to {copied.path} ({copied.bytes / 2**20:.1f} MiB, {copied.seconds:.1f} s); "
          f"the master key ({key}) that decrypts its secrets is not in the copy: keep it too, apart from it",
          file=sys.stderr)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Say what the data dir and the database hold and whether their server is up; exit 1
    when something is wrong."""
    import json

    from app.doctor import examine, render

    report = examine(_settings(args))
    print(json.dumps(report.as_json(), indent=2) if args.json else render(report))
    return 0 if report.healthy else 1


def _password(from_stdin: bool, prompt: str) -> str:
    """The password from standard input's first line (`--password-stdin`: scripts, CI), else
    asked on the terminal; refused when there is neither."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask the password on: pass --password-stdin and send it on standard input")
    return getpass.getpass(prompt)


class UsageError(FlowmillError):
    """The command was called in a way it cannot work."""


def _client(args: argparse.Namespace) -> Client:
    from app.client import Client
    from app.profiles import load_remote

    remote = load_remote(url=getattr(args, "url", None), token=getattr(args, "token", None),
                         workspace=getattr(args, "workspace", None), profile=getattr(args, "profile", None))
    return Client(remote)


def _progress() -> Progress:
    """A progress display on a terminal; on anything else it shows nothing (the lines said
    beside it are the plain record)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not console.is_terminal, transient=True)


def cmd_login(args: argparse.Namespace) -> int:
    """Log in to a server and keep a token for it in a profile (0600)."""
    import socket

    import httpx

    from app.profiles import DEFAULT, Profile, Profiles, config_dir

    url = (args.server or getattr(args, "url", None) or "http://127.0.0.1:8080").rstrip("/")
    name = getattr(args, "profile", None) or DEFAULT
    workspace = getattr(args, "workspace", None) or "main"
    given = getattr(args, "token", None)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            if given:
                token = given
            else:
                username = args.username or _ask("username: ")
                password = _password(args.password_stdin, f"password for {username} at {url}: ")
                login = http.post("/auth/login", json={"username": username, "password": password})
                if login.status_code != 200:
                    raise UsageError(f"login refused: {_message(login)}")
                session = login.json()["token"]
                # A token of its own for this machine, revocable by itself (GET/DELETE /api/v1/tokens):
                # the session's expires within hours.
                made = http.post("/api/v1/tokens", json={"label": f"flowmill login on {socket.gethostname()}"[:200]},
                                 headers={"Authorization": f"Bearer {session}"})
                if made.status_code != 201:
                    raise UsageError(f"could not create a token: {_message(made)}")
                token = made.json()["token"]
            who = http.get("/api/users/whoami", headers={"Authorization": f"Bearer {token}"})
            if who.status_code != 200:
                raise UsageError(f"the server refused the token: {_message(who)}")
    except httpx.HTTPError as error:
        raise UsageError(f"cannot reach Flowmill at {url}: {error}") from None
    username = who.json()["username"]
    profiles = Profiles(config_dir())
    profiles.save(Profile(name, url, token, workspace, username))
    print(f"logged in to {url} as {username} (profile {name}, kept in {profiles.file})", file=sys.stderr)
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    """Forget a profile's token (it stays valid on the server until revoked there)."""
    from app.profiles import Profiles, config_dir

    profiles = Profiles(config_dir())
    name = getattr(args, "profile", None)
    if not profiles.remove(name):
        raise UsageError(f"no profile {name or profiles.current()!r}")
    print(f"logged out (profile {name or 'current'} forgotten)", file=sys.stderr)
    return 0


def _ask(prompt: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask on: pass --username (and --password-stdin), or --token")
    return input(prompt).strip()


def _message(response: object) -> str:
    try:
        return str(response.json()["error"]["message"])  # type: ignore[attr-defined]
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.text[:200]}"  # type: ignore[attr-defined]


def cmd_run(args: argparse.Namespace) -> int:
    """Run a script on the server, printing its log lines as they come, then its result."""
    import json

    from app.client import parse_args

    body = parse_args(args.arg)
    with _client(args) as client:
        created = client.call("POST", f"/jobs/run/p/{args.path}", json=body,
                              headers={"X-Flowmill-Trigger": "cli", "X-Flowmill-Args": "text"})
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
    """Push a folder of scripts and flows (`f/<namespace>/<name>.flow.yaml`) to the server, or
    pull the server's into a folder."""
    from pathlib import Path

    from app import flowfiles, scriptfiles

    root = Path(args.folder)
    with _client(args) as client, _progress() as progress:
        move = scriptfiles.push if args.direction == "push" else scriptfiles.pull
        try:
            counts = move(client, root, dry_run=args.dry_run, progress=progress)
        except scriptfiles.FolderError:
            if args.direction == "pull" or not flowfiles.flow_files(root):  # a folder of flows alone is fine
                raise
            counts = {"new": 0, "changed": 0, "unchanged": 0}
        flows = (flowfiles.push if args.direction == "push" else flowfiles.pull)(client, root, dry_run=args.dry_run)
        counts = {kind: counts[kind] + flows[kind] for kind in counts}
    verb = "would change" if args.dry_run else "changed"
    print(f"{counts['new']} new, {counts['changed']} {verb}, {counts['unchanged']} unchanged", file=sys.stderr)
    return 0


def cmd_generate_metadata(args: argparse.Namespace) -> int:
    """Write <script>.script.yaml and <script>.lock beside every script of a folder."""
    from pathlib import Path

    from app.scriptfiles import generate_metadata

    with _progress() as progress:
        report = generate_metadata(Path(args.folder), progress=progress)
    for failure in report.failed:
        print(failure, file=sys.stderr)
    failed = f", {len(report.failed)} failed" if report.failed else ""
    print(f"wrote metadata for {report.done} script(s){failed}", file=sys.stderr)
    return 1 if report.failed else 0


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


def _remote_flags(parser: argparse.ArgumentParser, server: str, workspace: str) -> None:
    """--url, --token, --profile, --workspace, said for this command (`server` and `workspace`
    are what they mean here). They are taken before the command as well as after it, so they
    default to nothing (SUPPRESS) and are read with getattr: a default here would overwrite one
    given before the command."""
    quiet = argparse.SUPPRESS
    parser.add_argument("--url", default=quiet,
                        help=f"{server} (FLOWMILL_URL, else the profile's, else http://127.0.0.1:8080)")
    parser.add_argument("--token", default=quiet,
                        help="the API token to act with (FLOWMILL_TOKEN, else the profile's)")
    parser.add_argument("--profile", default=quiet,
                        help="the login profile to take the server and token from (FLOWMILL_PROFILE, else the one "
                             "`flowmill login` saved last)")
    parser.add_argument("--workspace", default=quiet,
                        help=f"{workspace} (FLOWMILL_WORKSPACE, else the profile's, else main)")


def cmd_tui(args: argparse.Namespace) -> int:
    """Open the terminal UI on a server: --url/--token, else FLOWMILL_URL/_TOKEN, else the
    profile's. A URL or token given here is remembered in the profile once the server takes it.
    On this machine's own server with no token, it signs in as the local admin if `flowmill`
    made one."""
    from app.client import Remote
    from app.local import read_password
    from app.profiles import load_remote

    url, token, profile = getattr(args, "url", None), getattr(args, "token", None), getattr(args, "profile", None)
    if url and token:  # all given: the profile named may be a new one, made below
        remote = Remote(url, token, getattr(args, "workspace", None) or "main", profile)
    else:
        remote = load_remote(url=url, token=token, workspace=getattr(args, "workspace", None), profile=profile)
    login = None
    settings = load_settings()
    if not remote.token and remote.url.rstrip("/") in (settings.internal_url, settings.base_url):
        password = read_password(settings.home)
        login = ("admin", password) if password else None
    if url or token:
        _remember(remote, profile)
    return _open_tui(remote.url, remote.token, remote.workspace, login)


def _remember(remote: object, profile: str | None) -> None:
    """Keep the server and token in the profile (as `flowmill login --token` does) when the
    server takes the token; say nothing when it cannot be asked now."""
    import httpx

    from app.profiles import DEFAULT, Profile, Profiles, config_dir

    url, token, workspace = remote.url, remote.token, remote.workspace  # type: ignore[attr-defined]
    if not token:
        return
    try:
        who = httpx.get(url.rstrip("/") + "/api/users/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=3)
    except httpx.HTTPError:
        return
    if who.status_code == 200:
        Profiles(config_dir()).save(Profile(profile or DEFAULT, url, token, workspace, who.json().get("username", "")))


def cmd_local(args: argparse.Namespace) -> int:
    """`flowmill` alone on a terminal: this machine's server (started unless one answers) and
    the TUI, signed in as the local admin."""
    from app.local import LocalServer

    server = LocalServer(load_settings(), keep=bool(getattr(args, "keep_server", False)))
    server.ensure_started()
    try:
        with server.stopped_on_hangup():
            return _open_tui(server.url, None, "main", None, boot=server.boot)
    finally:
        server.stop()


def _open_tui(url: str, token: str | None, workspace: str, login: tuple[str, str] | None,
              boot: object = None) -> int:
    # Textual is imported here only: `flowmill serve` and the other commands never load it.
    from tui.app import FlowmillApp
    from tui.client import FlowmillClient, Login

    client = FlowmillClient(url, token, workspace, Login(*login) if login else None)
    FlowmillApp(client, boot=boot).run()  # type: ignore[arg-type]
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"flowmill {flowmill.__version__}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="flowmill", description="A self-hosted automation engine in one process.",
        epilog="With no command on a terminal, flowmill starts the server on its defaults unless one answers, "
               "and opens the terminal UI signed in as the local admin (the server stops with it unless "
               "--keep-server). With no command and no terminal, it serves, as `flowmill serve` does. "
               "Options may come before or after a command's arguments.",
    )
    _remote_flags(root, "the server to talk to", "the workspace to act in")
    root.add_argument("--keep-server", action="store_true", default=argparse.SUPPRESS,
                      help="with no command: keep the server started for the terminal UI running after it closes")
    commands = root.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server (what `flowmill` alone does)",
                                description="Run the HTTP server, the executor and the schedules in this process.")
    _server_flags(serve)
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date",
                                  description="Bring the database schema up to date, as `serve` does at start.")
    migrate.add_argument("--vacuum", action="store_true",
                         help="convert a SQLite file made without incremental vacuum, whatever its size (one VACUUM: "
                              "it then shrinks as runs are pruned; `serve` converts only files up to 64 MiB)")
    _server_flags(migrate)
    migrate.set_defaults(run=cmd_migrate)

    backup = commands.add_parser("backup", help="copy the database while the server runs",
                                 description="Copy the SQLite database to PATH as it is at one moment, while the "
                                             "server runs (SQLite's online backup, a few pages at a time). PATH "
                                             "appears only once the copy is whole. On PostgreSQL, print the pg_dump "
                                             "command to use instead and exit with status 2.")
    backup.add_argument("path", metavar="PATH", help="the file to write the copy to")
    backup.add_argument("--force", action="store_true", help="replace PATH if it exists")
    _server_flags(backup)
    backup.set_defaults(run=cmd_backup)

    doctor = commands.add_parser("doctor", help="say what the data dir holds and whether its server is up",
                                 description="Print the data dir, the database's size and its WAL's, the runs by "
                                             "status, log lines, audit entries, the oldest run, the retention "
                                             "settings and whether the server of the data dir is up (its lock held, "
                                             "/readyz answering). Exit status 1 when something is wrong.")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    _server_flags(doctor)
    doctor.set_defaults(run=cmd_doctor)

    login = commands.add_parser("login", help="log in to a server and keep a token for it",
                                description="Log in with a username and password (or check a token you give) and "
                                            "keep an API token for the server in a profile, readable only by you.")
    login.add_argument("server", nargs="?", metavar="URL", help="the server (default http://127.0.0.1:8080)")
    login.add_argument("--username", help="who to log in as (asked on the terminal if left out)")
    login.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input instead of asking for it")
    _remote_flags(login, "the server, when URL is not given", "the workspace the profile acts in")
    login.set_defaults(run=cmd_login)

    logout = commands.add_parser("logout", help="forget a profile's token",
                                 description="Forget the token of a profile (the current one by default).")
    logout.add_argument("--profile", default=argparse.SUPPRESS, help="the profile to forget (default: the current one)")
    logout.set_defaults(run=cmd_logout)

    user = commands.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    create = user.add_parser("create", help="create a user (the first becomes instance admin)",
                             description="Create a user directly in the database of this machine's server "
                                         "(the first user becomes the instance admin).")
    create.add_argument("username", help="the new user's name")
    create.add_argument("--role", default=None, help="the user's role in workspace main: viewer (default), executor, editor or admin")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (no terminal needed)")
    _server_flags(create)
    create.set_defaults(run=cmd_user_create)

    run = commands.add_parser("run", help="run a script on the server and print its logs and result",
                              description="Run a script, printing its log lines on stderr as they come and its "
                                          "result as JSON on stdout; exit 1 if the run does not succeed.")
    run.add_argument("path", help="the script's path, e.g. f/demo/hello")
    run.add_argument("--arg", action="append", default=[], metavar="K=V",
                     help="an argument of main (repeat a key for a list); V is text, converted by the server "
                          "to the type main declares (n=3 is an int for `n: int`, a string for `n: str`)")
    _remote_flags(run, "the server that runs the script", "the workspace that holds the script")
    run.set_defaults(run=cmd_run)

    sync = commands.add_parser("sync", help="move a folder of scripts to or from a server",
                               description="push: save the folder's new and changed scripts on the server. "
                                           "pull: write the server's scripts, with their .script.yaml and .lock, "
                                           "into the folder.")
    sync.add_argument("direction", choices=["push", "pull"], help="push (folder -> server) or pull (server -> folder)")
    sync.add_argument("folder", nargs="?", default=".", help="the folder holding f/ and u/ (default: here)")
    sync.add_argument("--dry-run", action="store_true", help="only say what would change; change nothing")
    _remote_flags(sync, "the server to push to or pull from", "the workspace whose scripts are synced")
    sync.set_defaults(run=cmd_sync)

    metadata = commands.add_parser("generate-metadata", help="write .script.yaml and .lock beside each script",
                                   description="Write <name>.script.yaml (the schema inferred from main) and "
                                               "<name>.lock (pinned requirements) beside every script of a folder. "
                                               "Scripts that do not compile are named with their line; the others "
                                               "are still done, and the exit status is 1.")
    metadata.add_argument("folder", nargs="?", default=".", help="the folder holding f/ and u/ (default: here)")
    metadata.set_defaults(run=cmd_generate_metadata)

    resource_type = commands.add_parser("resource-type", help="resource types").add_subparsers(dest="rt_command", required=True)
    rt_list = resource_type.add_parser("list", help="list resource types",
                                       description="List the resource types the server knows: built-in and the workspace's own.")
    rt_list.add_argument("--schema", action="store_true", help="print each type's JSON schema as well")
    _remote_flags(rt_list, "the server to ask", "the workspace whose own types are listed too")
    rt_list.set_defaults(run=cmd_resource_types)

    tui = commands.add_parser("tui", help="open the terminal UI on a server",
                              description="Open the terminal UI on a Flowmill server: its runs, scripts, flows, "
                                          "workflows, routes, triggers, approvals and audit log, live. The server "
                                          "and token given are remembered in the profile.")
    _remote_flags(tui, "the server to open", "the workspace to show")
    tui.set_defaults(run=cmd_tui)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(run=cmd_version)
    root.commands = {"sync": sync, "generate-metadata": metadata, "login": login, "run": run, "backup": backup, "tui": tui}  # type: ignore[attr-defined]
    return root


def parse(argv: list[str]) -> argparse.Namespace:
    """The arguments, options before or after a command's positional arguments: argparse alone
    takes `sync push --dry-run FOLDER` as FOLDER left out, then refuses FOLDER."""
    root = parser()
    args, extras = root.parse_known_args(argv)
    command = getattr(root, "commands", {}).get(args.command)
    if not extras or command is None or args.command not in argv:
        return root.parse_args(argv)  # as it was, or argparse's own error
    start = argv.index(args.command) + 1
    for key, value in vars(command.parse_intermixed_args(argv[start:])).items():
        setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_pip"]:
        # The frozen program's own pip (it has no `python -m pip`): scripts' dependencies are
        # installed with it. Kept out of argparse, which would read pip's options as ours.
        from pip._internal.cli.main import main as pip_main

        return pip_main(argv[1:])
    if argv[:1] == ["_tui-smoke"]:  # the TUI headless on a server, every section: for the build's tests
        import os

        from tui.smoke import smoke

        return smoke(argv[1], os.environ.get("FLOWMILL_TOKEN"))
    if argv[:1] == ["_forkserver"]:  # started by `serve`, not by hand; it parses its own options
        from app.runtimes.python.supervisor import main as forkserver

        return forkserver(argv[1:])
    args = parse(argv)
    if args.command is None:  # `flowmill` alone: the TUI on a terminal, else the server
        if sys.stdin.isatty() and sys.stdout.isatty():
            args.run = cmd_local
        else:
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
