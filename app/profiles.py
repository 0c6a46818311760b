"""Where the command line keeps its logins: named profiles, each a server, a token and a
workspace, in one file only its owner may read (`flowmill login` writes it).

The file is `<config dir>/profiles.json` (`~/.config/flowmill` on Linux, or
`FLOWMILL_CONFIG_DIR`); the profile used is `--profile`, else `FLOWMILL_PROFILE`, else the one
the last login made current, else `default`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from platformdirs import user_config_dir

from app.client import Remote
from app.errors import ConfigError

DEFAULT = "default"


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    url: str
    token: str
    workspace: str = "main"
    username: str = ""


class Profiles:
    def __init__(self, folder: Path) -> None:
        self.file = folder / "profiles.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.file.read_text())
        except FileNotFoundError:
            return {"current": DEFAULT, "profiles": {}}
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {self.file}: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
            raise ConfigError(f"{self.file} is not a Flowmill profiles file")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.file.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
        os.chmod(temporary, 0o600)  # in case it existed with wider rights
        os.replace(temporary, self.file)

    def current(self) -> str:
        return str(self._read().get("current") or DEFAULT)

    def get(self, name: str | None) -> Profile | None:
        """The profile called `name` (None: the current one), if it exists."""
        data = self._read()
        name = name or str(data.get("current") or DEFAULT)
        found = data["profiles"].get(name)
        if not isinstance(found, dict):
            return None
        return Profile(name, str(found.get("url", "")), str(found.get("token", "")), str(found.get("workspace") or "main"),
                       str(found.get("username", "")))

    def save(self, profile: Profile) -> None:
        """Store `profile` (replacing one of the same name) and make it the current one."""
        data = self._read()
        data["profiles"][profile.name] = {"url": profile.url, "token": profile.token, "workspace": profile.workspace,
                                          "username": profile.username}
        data["current"] = profile.name
        self._write(data)

    def remove(self, name: str | None) -> bool:
        """Forget a profile (None: the current one); False if there was none."""
        data = self._read()
        name = name or str(data.get("current") or DEFAULT)
        if data["profiles"].pop(name, None) is None:
            return False
        self._write(data)
        return True


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the command line keeps its profiles (FLOWMILL_CONFIG_DIR, else the OS config dir)."""
    env = os.environ if env is None else env
    return Path(env.get("FLOWMILL_CONFIG_DIR") or user_config_dir("flowmill"))


def load_remote(env: Mapping[str, str] | None = None, **overrides: str | None) -> Remote:
    """Where the command line finds the server: flags, then FLOWMILL_URL / _TOKEN / _WORKSPACE,
    then the profile (`--profile`, FLOWMILL_PROFILE or the one `flowmill login` made current)."""
    env = os.environ if env is None else env
    name = overrides.get("profile") or env.get("FLOWMILL_PROFILE")
    profile = Profiles(config_dir(env)).get(name)
    if name and profile is None:
        raise ConfigError(f"no profile {name!r}: log in with `flowmill login --profile {name} URL`")
    port = env.get("FLOWMILL_PORT", "8080")
    return Remote(
        url=overrides.get("url") or env.get("FLOWMILL_URL") or (profile.url if profile else "") or f"http://127.0.0.1:{port}",
        token=overrides.get("token") or env.get("FLOWMILL_TOKEN") or (profile.token if profile else None),
        workspace=overrides.get("workspace") or env.get("FLOWMILL_WORKSPACE") or (profile.workspace if profile else "main"),
        profile=profile.name if profile else None,
    )
