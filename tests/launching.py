"""Running ``accelerate launch`` in tests: a free port for each launch, and no rank left behind on a timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence


def free_port() -> int:
    """A TCP port nothing listens on now (for ``--main_process_port``, a server, ...)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_launch(
    command: Sequence[str], env: Mapping[str, str], timeout: float, cwd: str | os.PathLike | None = None
) -> subprocess.CompletedProcess:
    """Run ``command`` (an ``accelerate launch``) in a session of its own, capturing its output; on a timeout kill
    the whole session, the ranks it started included (``subprocess.run`` would kill the launcher only and leave the
    ranks holding the port), then raise ``subprocess.TimeoutExpired``."""
    process = subprocess.Popen(
        list(map(str, command)),
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
