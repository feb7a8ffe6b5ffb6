"""Running the explorer: the socket, the warnings about where it listens, the warm-up, uvicorn."""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading

from fastapi import FastAPI

from facevae.data.align import detector
from facevae.serving.schemas import FromTest

ALL_INTERFACES = ("0.0.0.0", "::", "")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port); ValueError with the reason when it cannot be had."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: a port is 0 (any free one) to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ValueError(f"--host {host!r}: not an address this machine knows ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is in use: choose another with --port (0: any free one)") from None
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/"


def exposure_warning(host: str) -> str | None:
    """What to tell the user when the explorer listens beyond this machine (None on a loopback address)."""
    if host in ALL_INTERFACES:
        where = "every network interface"
    else:
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:  # a name: loopback only when it resolves to one
            if host == "localhost":
                return None
        where = host
    return (f"listening on {where}: anyone who can reach this machine can use the explorer and send it photos; "
            "it has no login. The default, 127.0.0.1, keeps it to this machine.")


def warm_up(app: FastAPI) -> list[str]:
    """Open the first run and decode one face, so the first slider move is as fast as the rest; load the face
    detector in the background. Returns what was opened, in words."""
    threading.Thread(target=detector, name="load-face-detector", daemon=True).start()
    catalog = app.state.catalog
    first = catalog.ids()[0]
    explorer = catalog.explorer(first)
    explorer.sliders(None)
    if explorer.test_count:
        explorer.face(FromTest(kind="test", index=0))
    info = explorer.info()
    conditions = f", {len(info['conditions'])} conditions" if info["conditions"] else ""
    groups = f" in {len(info['groups'])} groups" if len(info["groups"]) > 1 else ""
    return [f"{first}: {info['label']}, {info['latent_units']} latent units{groups}{conditions}, "
            f"{info['test_faces']} test faces"]


def run(app: FastAPI, sock: socket.socket) -> None:
    """Serve until Ctrl-C (or SIGTERM)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
