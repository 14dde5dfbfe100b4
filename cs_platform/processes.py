"""Child processes of the platform's own (the local model, daphne): ports and readiness."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on `host:port` now (probed as daphne and uvicorn bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Both servers set SO_REUSEADDR, so a port in TIME_WAIT is free to them and to this probe.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen()
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _listening_socket_inodes(port: int) -> set[str] | None:
    """The descriptors' link targets ("socket:[inode]") of the sockets listening on TCP `port`;
    None where /proc/net/tcp cannot be read (not Linux)."""
    inodes = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            fields = row.split()
            listening = fields[3] == "0A"
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes if readable else None


def port_listeners(port: int) -> set[int] | None:
    """The pids of the processes listening on TCP `port` (Linux, those whose descriptors this user may
    read); None where /proc cannot tell."""
    inodes = _listening_socket_inodes(port)
    if inodes is None:
        return None
    pids: set[int] = set()
    if not inodes:
        return pids
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            if any(os.readlink(descriptor) in inodes for descriptor in (process / "fd").iterdir()):
                pids.add(int(process.name))
        except OSError:
            continue
    return pids


def process_description(pid: int) -> str:
    """A process as "pid N (command line)", the command line cut at 200 characters."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"pid {pid}"
    command = command.strip()
    return f"pid {pid} ({command[:200]}{'…' if len(command) > 200 else ''})"


def port_holder(port: int) -> str | None:
    """Who listens on TCP `port`, as "pid N (command line)", where /proc shows it (Linux, same user)."""
    pids = port_listeners(port)
    return process_description(min(pids)) if pids else None


def parent_death_signal(signal_number: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has Linux send the child `signal_number` when its parent dies, even by SIGKILL.

    The kernel sends it when the *thread* that started the child exits: start long-lived children
    from the main thread. None elsewhere than Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Looked up now, in the parent: between fork and exec the child should do as little as it can.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0)
        if os.getppid() != parent:
            # The parent died before the prctl: the signal it asked for would never come.
            os.kill(os.getpid(), signal_number)

    return set_parent_death_signal


def exit_description(returncode: int) -> str:
    """How a child ended, in words: "exited with status 1" or "was killed by signal 9"."""
    return f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"


class PortTakenByAnother(RuntimeError):
    """The server that answered is not the child that was started: another process holds its port."""

    def __init__(self, what: str, port: int, holder: str | None) -> None:
        self.port = port
        self.holder = holder
        super().__init__(f"{what} did not get port {port}: {holder or 'another process'} answered on it")


def _belongs_to(pid: int, process: subprocess.Popen[bytes]) -> bool:
    """Whether `pid` is `process` or in its process group (a child started with start_new_session)."""
    if pid == process.pid:
        return True
    try:
        return os.getpgid(pid) == process.pid
    except OSError:
        return False


def wait_until_answering(
    url: str,
    *,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    what: str = "the server",
    port: int | None = None,
) -> None:
    """Wait until `url` answers 200; fail early if `process` exits, and after `timeout` seconds.

    With `port`, the answer counts only from `process` itself: a server that was already there, or one
    that bound the port between a check and the child's own bind, raises PortTakenByAnother instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} {exit_description(process.returncode)}")
        try:
            answered = httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            answered = False
        if answered:
            if port is None or process is None:
                return
            listeners = port_listeners(port)
            if listeners is None:
                # No /proc to ask: the child still running after an answer is the best sign left.
                if process.poll() is None:
                    return
            elif any(_belongs_to(pid, process) for pid in listeners):
                return
            else:
                # Another process listens there, so the child cannot: it will fail, or already has.
                holder = process_description(min(listeners)) if listeners else None
                raise PortTakenByAnother(what, port, holder)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {timeout:.0f} s")
        time.sleep(0.25)


def stop_process_group(process: subprocess.Popen[bytes] | None, *, grace_seconds: float = 10) -> None:
    """Stop a child started with start_new_session=True, and all its children: SIGTERM, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_seconds)
