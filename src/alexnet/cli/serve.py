"""``alexnet serve``: argument wiring and printing over ``alexnet.serve``; ``build_parser`` adds it."""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import sys
from urllib.parse import quote

from ..errors import AlexNetError

TOKEN_VARIABLE = "ALEXNET_SERVE_TOKEN"  # a token here is not shown by ps, as a --token argument is


def add_serve_command(commands) -> argparse.ArgumentParser:
    """Add ``serve`` to ``commands`` (the subparsers of ``alexnet``'s parser); returns its parser."""
    parser = commands.add_parser(
        "serve", help="a page and the Open Inference Protocol (KServe v2 / Triton HTTP) over trained weights")
    parser.add_argument("sources", nargs="+", metavar="WEIGHTS|RUN_DIR|NAME=PATH",
                        help="models to serve, named after their run folder or file unless NAME= is given")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=8000, help="default: 8000; 0: any free port (printed)")
    parser.add_argument("--max-batch", type=int, default=32, help="images per forward pass at most (default: 32)")
    parser.add_argument("--max-delay-ms", type=float, default=5.0,
                        help="how long the first request of a batch waits for others (default: 5)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"),
                        help="default: the precision the weights were tested in")
    parser.add_argument("--token", default=None,
                        help=f"a bearer token every route but health then requires (or set {TOKEN_VARIABLE})")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="a request's answer, at most this late (default: 30)")
    parser.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit, in MiB (default: 20)")
    parser.add_argument("--max-pixels", type=int, default=40_000_000,
                        help="an uploaded image's pixel limit, read from its header before decoding (default: 40,000,000)")
    parser.set_defaults(run=run_serve)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """Open the models, listen, print where, serve until SIGTERM or Ctrl-C (then 0)."""
    try:
        from .. import serve
    except ImportError as error:
        raise AlexNetError(f"alexnet serve needs FastAPI and uvicorn ({error.name} is missing): "
                           f"pip install 'alexnet[serve]'") from None
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    if token is not None and not re.fullmatch(r"[A-Za-z0-9._~+/=-]{8,}", token):
        # it travels in a header, a cookie and a URL: characters none of them needs to escape
        raise AlexNetError("the token must be at least 8 letters, digits or ._~+/=- (python -c 'import secrets; "
                           "print(secrets.token_urlsafe())' makes one)")
    body_bytes = args.max_body_mb * 2**20
    limits = serve.Limits(max_body_bytes=int(body_bytes) if math.isfinite(body_bytes) else body_bytes,
                          max_pixels=args.max_pixels, timeout_s=args.timeout_s)
    listener = serve.bind(args.host, args.port)  # before the models load: a taken port fails at once
    try:
        models = serve.open_models(args.sources, device=args.device, precision=args.precision,
                                   max_batch=args.max_batch, max_delay_s=args.max_delay_ms / 1000)
    except BaseException:  # a model that cannot be opened: the port is given back at once
        listener.close()
        raise
    if token is None and not _loopback(args.host):
        print(f"alexnet: warning: serving on {args.host} without --token: anyone who can reach this machine "
              f"can use the models", file=sys.stderr)

    def listening(url: str) -> None:
        page = f"{url}/?token={quote(token, safe='')}" if token else f"{url}/"
        for model in models:
            trained = model.trained
            print(f"model {model.name}: {trained.metadata.model}, {trained.metadata.num_classes} classes, input "
                  f"{'x'.join(map(str, trained.input_size))}, {trained.device}, batches of up to {args.max_batch}")
        print(f"serving at {url}  page {page}  API {url}/v2  docs {url}/docs", flush=True)

    serve.run_server(models, limits=limits, token=token, listener=listener, on_listening=listening)
    print("alexnet serve: every accepted request answered; stopped", flush=True)
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
