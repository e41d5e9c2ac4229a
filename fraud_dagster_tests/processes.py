"""Servers in subprocesses on loopback, for the serving tests and benchmark: a free port, waiting
until ready, stopping the whole process group."""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300,
               output: Callable[[], str] = lambda: "") -> None:
    """Poll ``url`` until it answers 200; fail with the server's output if it exits or hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{output()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s:\n{output()[-3000:]}")


def _tree(process: subprocess.Popen) -> list[psutil.Process]:
    """The process and its descendants: BentoML's workers run in sessions of their own, so a
    signal to the process group does not reach them."""
    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL to the process and every descendant at once: what a power cut or the OOM killer
    leaves (no shutdown hook runs anywhere)."""
    tree = _tree(process)
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(tree, timeout=30)
    process.wait()


def stop_group(process: subprocess.Popen, timeout: float = 120) -> None:
    """SIGTERM to the process group (started with ``start_new_session=True``), then SIGKILL to
    whatever of its tree is left."""
    if process.poll() is not None:
        return
    tree = _tree(process)
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(tree, timeout=10)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    process.wait()


class BentoServer:
    """``bentoml serve`` run in ``bento/`` on a free loopback port, in its own process group,
    with its own ``BENTOML_HOME`` and data root."""

    def __init__(self, bentoml_home: Path, data_dir: Path, log: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {**os.environ, "BENTOML_HOME": str(bentoml_home),
                    "FRAUD_DATA_DIR": str(data_dir), "BENTOML_DO_NOT_TRACK": "True", **env}
        self.process: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                cwd=REPO / "bento", env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    def wait_ready(self, timeout: float = 300) -> None:
        wait_ready(f"{self.url}/readyz", self.process, timeout, self.output)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)

    def exit_code(self, timeout: float = 300) -> int:
        """Start the server and wait for it to exit (a start-up that must fail)."""
        process = self.start()
        try:
            return process.wait(timeout=timeout)
        finally:
            self.stop()

    def kill(self) -> None:
        """SIGKILL to the server and its workers: no shutdown hook runs."""
        kill_tree(self.process)

    @contextlib.contextmanager
    def running(self):
        """Started and ready inside the block, stopped (its log written) after it."""
        self.start()
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


POSTGRES_BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"),)
"""Where Debian's postgresql-15 package puts initdb and pg_ctl (not on the PATH)."""


def postgres_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: the PATH's, else Debian's; None if neither."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    return next((d for d in POSTGRES_BIN_DIRS if (d / "initdb").exists()
                 and (d / "pg_ctl").exists()), None)


class PostgresServer:
    """A throwaway PostgreSQL on a free loopback port, its cluster in a new folder under /tmp.

    ``initdb`` refuses to run as root: as root, the cluster belongs to the ``postgres`` user (which
    Debian's package creates) and both programs run as that user (``runuser``). Connections from
    loopback are trusted (``postgres``, no password). ``fsync=False`` for tests (nothing to keep
    after a crash); the benchmark keeps PostgreSQL's default (on). ``settings``: more server
    settings (``postgres -c name=value``), e.g. ``{"synchronous_commit": "off"}``."""

    def __init__(self, bin_dir: Path, fsync: bool = True, settings: dict[str, str] | None = None):
        self.bin_dir = bin_dir
        self.port = free_port()
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.folder = Path(tempfile.mkdtemp(prefix="fraud-postgres-", dir="/tmp"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> None:
        out = subprocess.run([*self._as_user, str(self.bin_dir / program), *args],
                             capture_output=True, text=True)
        if out.returncode:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({out.returncode}):\n{out.stdout}{out.stderr}{log}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-sync")
        options = " ".join([f"-h 127.0.0.1 -p {self.port} -k {self.folder}",
                            *([] if self.fsync else ["-F"]),
                            *(f"-c {name}={value}" for name, value in self.settings.items())])
        self._run("pg_ctl", "start", "-w", "-t", "120", "-D", str(self.data), "-l", str(self.log),
                  "-o", options)

    def restart(self) -> None:
        """Stop the server (fast: every session is ended) and start it again as it was."""
        self._run("pg_ctl", "restart", "-w", "-t", "120", "-m", "fast", "-D", str(self.data),
                  "-l", str(self.log))

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))
        shutil.rmtree(self.folder, ignore_errors=True)

    def sql(self, *statements: str) -> None:
        """Run statements one by one outside a transaction, as the superuser."""
        import psycopg2

        connection = psycopg2.connect(self.url().replace("+psycopg2", ""))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            connection.close()

    def create_database(self, name: str) -> str:
        """A new database; its URL."""
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    @contextlib.contextmanager
    def running(self):
        try:
            self.start()
            yield self
        finally:
            self.stop()
