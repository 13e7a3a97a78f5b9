"""`pix2pix ui`: the MLflow UI on this project's store, stopped cleanly with all its workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys


def serve_ui(uri: str, host: str, port: int, workers: int = 1) -> int:
    """`mlflow ui` on `uri` with `workers` server processes until it ends or this process gets
    SIGTERM/SIGINT; either stops the server's whole process group (its workers too), so the port is
    freed.

    Returns 0 after such a requested stop, else the server's own status (128 + N if signal N
    killed it). The handlers are in place before the server starts: no signal can orphan it."""
    server: list[subprocess.Popen] = []
    stopped: list[int] = []

    def stop(signum, frame):
        stopped.append(signum)
        for process in server:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
                   "--port", str(port), "--workers", str(workers)]
        # MLflow's server imports a Starlette module that warns of its own deprecation: nothing a user can act on
        quiet = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:starlette.middleware.wsgi is deprecated"]))
        server.append(subprocess.Popen(command, env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONWARNINGS": quiet},
                                       start_new_session=True))
        if stopped:  # the signal came while the server was starting
            stop(stopped[0], None)
        code = server[0].wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for process in server:  # workers the server left behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    return 0 if stopped else (128 - code if code < 0 else code)
