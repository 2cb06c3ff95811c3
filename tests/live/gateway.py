"""The gateway as a real server, with a database of its own, and users made over HTTP."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from llm_api.localmodel import ServerProcess
from tests.live.processes import BASE_DIR, free_port, stop, track

PASSWORD = "correct-horse-battery-staple"
# The secrets of every process a test starts: they run with DEBUG off, so without them they would
# fail the checks project.E001/E002 (the environment's own, if set, win).
SECRETS = {"SECRET_KEY": secrets.token_urlsafe(50), "API_KEY_SECRET": secrets.token_urlsafe(50)}


def _is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in {"postgres", "postgresql"}


def _postgres_execute(url: str, statement: str, *names: str) -> None:
    """Run CREATE/DROP DATABASE on the server of `url` (outside a transaction), with `names`
    as the identifiers of the statement's `{}`s."""
    import psycopg
    from psycopg import sql

    query = sql.SQL(statement).format(*map(sql.Identifier, names))
    # The server's maintenance database: the configured one need not exist (tests never use it).
    maintenance = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as connection:
        connection.execute(query)


def manage(env: Mapping[str, str], *args: str, timeout: float = 180.0) -> str:
    """Run `manage.py <args>` with `env` as its whole environment; return its output."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def _migrate(database_url: str) -> None:
    """Migrate `database_url` in a process of its own, with a throwaway data folder."""
    with tempfile.TemporaryDirectory(prefix="live-migrate-") as data_dir:
        manage(
            {**SECRETS, **os.environ, "DATABASE_URL": database_url, "DATA_DIR": data_dir},
            "migrate",
            "--no-input",
        )


@dataclass
class LiveDatabase:
    """A database of one live gateway's own: created migrated, dropped (or deleted) at the end.

    Migrating takes seconds, so each test process migrates one template database per database
    server and gives every gateway a copy of it: `CREATE DATABASE … TEMPLATE` on PostgreSQL, a
    copy of the file on SQLite. The templates are removed when the process exits.
    """

    url: str
    _server_url: str | None = None  # PostgreSQL: where to connect to drop it
    _name: str | None = None

    _templates: ClassVar[dict[str, str]] = {}  # server URL or "sqlite" → template name or file

    @classmethod
    def create(cls, configured_url: str | None, workdir: Path) -> LiveDatabase:
        """Create it on the PostgreSQL server of `configured_url`, else as a SQLite file."""
        if configured_url and _is_postgres(configured_url):
            name = f"live_{uuid.uuid4().hex[:16]}"
            template = cls._postgres_template(configured_url)
            _postgres_execute(configured_url, "CREATE DATABASE {} TEMPLATE {}", name, template)
            url = urlunsplit(urlsplit(configured_url)._replace(path=f"/{name}"))
            return cls(url=url, _server_url=configured_url, _name=name)
        path = workdir / "db.sqlite3"
        shutil.copyfile(cls._sqlite_template(), path)
        return cls(url=f"sqlite:///{path}")

    @classmethod
    def _postgres_template(cls, server_url: str) -> str:
        if server_url not in cls._templates:
            name = f"live_template_{uuid.uuid4().hex[:12]}"
            _postgres_execute(server_url, "CREATE DATABASE {}", name)
            atexit.register(
                _postgres_execute, server_url, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name
            )
            _migrate(urlunsplit(urlsplit(server_url)._replace(path=f"/{name}")))
            cls._templates[server_url] = name
        return cls._templates[server_url]

    @classmethod
    def _sqlite_template(cls) -> str:
        if "sqlite" not in cls._templates:
            folder = tempfile.mkdtemp(prefix="live-template-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            path = os.path.join(folder, "db.sqlite3")
            _migrate(f"sqlite:///{path}")
            cls._templates["sqlite"] = path
        return cls._templates["sqlite"]

    def drop(self) -> None:
        """Drop the PostgreSQL database; a SQLite file goes with its folder."""
        if self._server_url and self._name:
            _postgres_execute(
                self._server_url, "DROP DATABASE IF EXISTS {} WITH (FORCE)", self._name
            )


class LiveGateway:
    """The gateway as a real server process on a free loopback port.

    `env` goes on top of os.environ (provider URLs, SIGNUP_CREDITS…). `server` is "granian"
    (the production server, `manage.py serve`) or "runserver" (`manage.py runserver
    --noreload`). Use it as a context manager, or call `start()` and `stop()` yourself;
    `manage(...)` runs a management command against its database, before or after start.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        server: Literal["granian", "runserver"] = "granian",
        workdir: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.server = server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="live-gateway-"))
        self._extra_env = dict(env or {})
        self.database: LiveDatabase | None = None
        self.process: ServerProcess | None = None

    def __enter__(self) -> LiveGateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """Return the environment of the gateway's processes."""
        env = {
            **SECRETS,
            **os.environ,
            # Sign in as often as a test needs to; the throttles have tests of their own.
            "TOKEN_THROTTLE_RATE": "10000/min",
            "SIGNUP_THROTTLE_RATE": "10000/min",
            "DATA_DIR": str(self.workdir),
            # Its own keys in a shared Redis: key ids repeat across the gateways' databases.
            "CACHE_KEY_PREFIX": f"live-{self.port}",
            **self._extra_env,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
        }
        if self.database:
            env["DATABASE_URL"] = self.database.url
        return env

    def prepare(self) -> None:
        """Create the gateway's own migrated database (once)."""
        if self.database is None:
            configured = self._extra_env.get("DATABASE_URL") or os.environ.get("DATABASE_URL")
            self.database = LiveDatabase.create(configured, self.workdir)

    def manage(self, *args: str, timeout: float = 180.0) -> str:
        """Run `manage.py <args>` with the gateway's environment; return its output."""
        return manage(self.env, *args, timeout=timeout)

    def start(self) -> LiveGateway:
        """Start the server and wait until GET /health answers 200 (else stop and raise)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.prepare()
        argv = [sys.executable, "manage.py", "serve"]
        if self.server == "runserver":
            argv = [
                sys.executable,
                "manage.py",
                "runserver",
                f"127.0.0.1:{self.port}",
                "--noreload",
            ]
        self.process = ServerProcess.start(
            f"gateway ({self.server})",
            argv,
            env=self.env,
            log_path=self.workdir / "gateway.log",
            cwd=BASE_DIR,
        )
        track(self.process)
        self.process.wait_until_ready(f"{self.url}/health", timeout=self.start_timeout)

    def stop(self) -> None:
        """Kill the server's process group, drop its database, remove its own folder."""
        try:
            if self.process:
                stop(self.process)
        finally:
            try:
                if self.database:
                    self.database.drop()
            finally:
                if self._own_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        """Return the server's output so far (stdout and stderr)."""
        path = self.workdir / "gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass(frozen=True)
class LiveUser:
    """A user made over HTTP: its JWT access token and one API key."""

    username: str
    password: str
    access: str
    key: str

    @property
    def jwt_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}

    @property
    def key_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _ok(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url} answered "
        f"{response.status_code}: {response.text[:2000]}"
    )
    return response.json()


def live_user(base_url: str, username: str, *, password: str = PASSWORD) -> LiveUser:
    """Sign up `username` on a live gateway, sign in, and create an API key, all over HTTP."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        account = {"username": username, "password": password}
        _ok(client.post("/api/signup/", json={**account, "email": f"{username}@example.com"}), 201)
        access = _ok(client.post("/api/token/", json=account), 200)["access"]
        headers = {"Authorization": f"Bearer {access}"}
        created = _ok(client.post("/api/keys/", json={"name": "live"}, headers=headers), 201)
    assert "key" in created, f"POST /api/keys/ did not return the key: {created}"
    return LiveUser(username=username, password=password, access=access, key=created["key"])


def live_api_key(base_url: str, username: str) -> str:
    """Return a working API key of a new user `username` on a live gateway."""
    return live_user(base_url, username).key
