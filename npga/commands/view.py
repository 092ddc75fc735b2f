"""`npga view AVATAR_OR_RUN`: look at an avatar in the browser, turn it, play its sequences, move its expression.

Serves a viser page (http://127.0.0.1:8080 by default) until Ctrl-C. Needs only the avatar file. Rendering is
either done by the browser (splats the server deforms; the default on a CPU) or by the server (images per tab;
the default on a GPU), switchable in the page.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro
import viser

from npga.commands.common import Runtime, RuntimeOptions, open_avatar
from npga.config import Range
from npga.viewer.app import ViewerApp, ViewerOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    avatar: tyro.conf.Positional[Path]
    """Avatar file (`RUN/avatar.npga`) or run folder written by `npga train`."""
    port: Annotated[int, Range(0, 65535)] = 8080
    """Port to serve on (the next free one when it is taken)."""
    host: str = "127.0.0.1"
    """Address to bind. Anything but a loopback address exposes the avatar to the network."""
    path: Literal["auto", "splats", "server"] = "auto"
    """splats: the browser renders the Gaussians the server deforms; server: the server renders an image per
    tab (with the screen-space CNN); auto: server on a GPU, splats on a CPU."""
    max_side: int = 0
    """Server render: longest image side in pixels at rest (0: 1024 on a GPU, 512 on a CPU)."""
    runtime: Runtime = RuntimeOptions()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str) -> None:
    """Raise ValueError unless `host` is an address this machine can serve on: otherwise the server's thread
    would die binding it while this process waited for it forever."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"--host {host!r} is not a known host name or address ({e})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        try:
            s.bind(address)
        except OSError as e:
            raise ValueError(f"--host {host!r} is not an address of this machine ({e.strerror})") from None


def main(cfg: Config) -> None:
    """Serves until Ctrl-C (the CLI turns that into exit status 130)."""
    check_host(cfg.host)
    file, avatar = open_avatar(cfg.avatar, cfg.runtime.device)  # a bad file fails here, before any server starts
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per connection otherwise
    if not _is_loopback(cfg.host):
        log.warning(
            "binding %s exposes the avatar to the network: anyone who can reach this machine on port %d can see it",
            cfg.host,
            cfg.port,
        )
    server = viser.ViserServer(host=cfg.host, port=cfg.port, verbose=False)
    app = ViewerApp(
        avatar, file, server, ViewerOptions(path=cfg.path, max_side=cfg.max_side, precision=cfg.runtime.precision)
    )
    app.start()
    print(
        f"npga view: {file} ({avatar.n_gaussians} Gaussians, {app.path} rendering, networks in "
        f"{app.renderer.precision}) at "
        f"http://{cfg.host}:{server.get_port()}  (Ctrl-C to stop)",
        flush=True,
    )
    try:
        app.wait()
    finally:
        app.stop()
        server.stop()
