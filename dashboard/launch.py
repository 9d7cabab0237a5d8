"""The command line that starts the dashboard, with the project's Streamlit settings wherever it is started from.

Streamlit reads `.streamlit/config.toml` only from the working directory (and the user's home), so an installed
`saliency-audit dashboard` run from any other folder would silently lose the upload limit, the localhost binding
and the toolbar mode. The settings live in one file, `dashboard/.streamlit/config.toml` (the repo root's
`.streamlit` links to it for `streamlit run dashboard/app.py`), and are passed as flags, which Streamlit ranks
above every config file.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
APP = HERE / "app.py"
CONFIG = HERE / ".streamlit" / "config.toml"


def settings(overrides: dict[str, object] | None = None) -> dict[str, object]:
    """{"server.maxUploadSize": 1024, ...}: the project's config file, flattened, then `overrides`."""
    flat = {f"{section}.{key}": value
            for section, options in tomllib.loads(CONFIG.read_text()).items() for key, value in options.items()}
    return flat | dict(overrides or {})


def streamlit_command(port: int = 8501, overrides: dict[str, object] | None = None) -> list[str]:
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port)]
    for name, value in settings(overrides).items():
        command += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return command


def free_port() -> int:
    """A TCP port nothing listens on now (for a second dashboard beside the default one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(port: int, timeout: float = 60) -> None:
    """Return once `streamlit run` accepts connections on `port`; RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the dashboard did not open port {port} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> None:
    """`python -m dashboard.launch --port N` (what `saliency-audit dashboard` becomes): this process turns into
    `streamlit run`, so signals sent to it reach Streamlit and no child is left serving the port."""
    parser = argparse.ArgumentParser(prog="saliency-audit dashboard")
    parser.add_argument("--port", type=int, default=8501)
    args = parser.parse_args(argv)
    if not APP.is_file():
        sys.exit(f"saliency-audit: dashboard not available: {APP} is missing from this installation; "
                 "reinstall with `pip install .`")
    command = streamlit_command(args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
