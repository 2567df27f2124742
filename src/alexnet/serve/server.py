"""Binding the socket and running uvicorn until SIGTERM or Ctrl-C, answering what was accepted first."""

from __future__ import annotations

import socket
from typing import Callable

import uvicorn

from ..errors import AlexNetError
from .app import build_app
from .models import Limits, ServedModel


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: any free port); refused with what to do."""
    if not 0 <= port <= 65535:
        raise AlexNetError(f"--port must be 0..65535, got {port}")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise AlexNetError(f"--host {host}: not an address of this machine ({error.strerror})") from None
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
        listener.listen(2048)
    except OSError as error:
        listener.close()
        raise AlexNetError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port "
                           f"(0: any free one) or --host") from None
    return listener


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, whose graceful shutdown on SIGTERM/SIGINT ends the process with status 0.

    uvicorn stops accepting connections, answers the requests in flight, runs the shutdown (each
    batcher answers its queue), then raises the signal again so that the default handler kills
    the process (status 143). After a complete drain nothing was lost, so that is not done here."""

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def run_server(models: list[ServedModel], *, host: str = "127.0.0.1", port: int = 8000, limits: Limits = Limits(),
               token: str | None = None, listener: socket.socket | None = None,
               on_listening: Callable[[str], None] | None = None, log_level: str = "warning") -> None:
    """Serve ``models`` until SIGTERM or Ctrl-C; returns once every accepted request is answered.

    ``on_listening`` is called with the base URL once the socket listens (port 0 resolved)."""
    listener = listener or bind(host, port)
    address = listener.getsockname()
    shown = f"[{address[0]}]" if listener.family == socket.AF_INET6 else address[0]
    if on_listening is not None:
        on_listening(f"http://{shown}:{address[1]}")
    # uvicorn closes a connection idle for 5 s by default; a client reusing it at that moment (a loaded
    # machine's clients answer late) loses its request to a reset. 75 s is nginx's keep-alive default.
    config = uvicorn.Config(build_app(models, limits=limits, token=token), log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=limits.timeout_s + 5, timeout_keep_alive=75, lifespan="on")
    _DrainingServer(config).run(sockets=[listener])
