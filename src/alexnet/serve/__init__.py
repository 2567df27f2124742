"""``alexnet serve``: trained weights behind a page and the Open Inference Protocol (KServe v2 /
Triton HTTP), with dynamic batching.

    >>> from alexnet.serve import Limits, open_models, run_server
    >>> models = open_models(["runs/fashion-mnist"], max_batch=32, max_delay_s=0.005)
    >>> run_server(models, host="127.0.0.1", port=8000, limits=Limits(), token=None)

``models.py`` opens the weights (``inference.open_trained``) and prepares uploads; ``batching.py``
coalesces concurrent requests into one forward pass in a worker thread; ``protocol.py`` reads and
writes the protocol's JSON and binary bodies; ``app.py`` is the FastAPI application; ``server.py``
binds the socket and runs uvicorn until SIGTERM or Ctrl-C, after answering every accepted request.
Needs the ``serve`` extra (``pip install alexnet[serve]``).
"""

from .models import Limits, ServedModel, open_models
from .server import bind, run_server

__all__ = ["Limits", "ServedModel", "bind", "open_models", "run_server"]
