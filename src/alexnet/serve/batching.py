"""Dynamic batching: requests that arrive close together share one forward pass, as Triton's and
TorchServe's batchers do.

One worker thread owns the model: it waits for the first request, then for more until ``max_batch``
images are queued or the oldest request has waited ``max_delay`` seconds, and runs them as one batch.
Under load the model is busy while requests queue, so the next batch fills at once and the delay
is not paid; alone, a request waits at most ``max_delay``. The event loop only enqueues and awaits
a future, so inference never blocks it.

Other work on the model (an attribution map for ``POST /explain``) is a job for the same thread,
run between batches with the model out of its inference frame (its own fp32 weights, no
``no_grad``), so that it never runs beside a batch or changes what a batch sees.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import AlexNetError
from ..inference import TrainedModel

log = logging.getLogger("alexnet.serve")
JOBS: list = []  # what ``_next_group`` returns when jobs wait (compared by identity)


@dataclass
class _Request:
    images: torch.Tensor  # (n, C, H, W), prepared as the weights were tested
    future: Future = field(default_factory=Future)  # logits (n, classes), float32 on the CPU
    arrived: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Runs ``trained``'s forward passes in one worker thread over coalesced requests.

    ``submit`` may be called from any thread; it returns a ``concurrent.futures.Future`` of the
    logits over the test views (``TrainedModel.logits``, as ``predict`` computes them). ``start`` warms the model up (a batch of
    ``max_batch`` and one of a single image, so the first requests pay no first-call costs) before
    ``ready`` is set; ``stop`` answers every request already queued, then ends the worker.
    """

    def __init__(self, trained: TrainedModel, *, max_batch: int = 32, max_delay_s: float = 0.005) -> None:
        if max_batch < 1:
            raise AlexNetError(f"--max-batch must be at least 1, got {max_batch}")
        if not 0 <= max_delay_s <= 10:
            raise AlexNetError(f"--max-delay-ms must be between 0 and 10000, got {max_delay_s * 1000:g}")
        self.trained = trained
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.ready = threading.Event()
        self.failure: str | None = None  # why warm-up failed; the model then never turns ready
        self.batches_run = 0  # forward passes, and the images they held: batching at work, in numbers
        self.images_run = 0
        self._pending: collections.deque[_Request] = collections.deque()
        self._pending_images = 0
        self._jobs: collections.deque[tuple[Callable[[], Any], Future]] = collections.deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="alexnet-batcher", daemon=True)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape of one prepared image: the model's input, or the larger image ten views are cut from."""
        return tuple(self.trained.views.loader_shape(self.trained.input_size))

    @property
    def queued_images(self) -> int:
        """Images waiting for a forward pass."""
        return self._pending_images

    def start(self) -> None:
        self._thread.start()

    def submit(self, images: torch.Tensor) -> Future:
        """Queue prepared images (n, C, H, W); the future gives their logits (n, classes)."""
        request = _Request(images)
        with self._condition:
            if self._stopping:
                raise AlexNetError("the server is shutting down")
            self._pending.append(request)
            self._pending_images += len(images)
            self._condition.notify()
        return request.future

    def run_job(self, job: Callable[[], Any]) -> Future:
        """Queue ``job`` for the worker thread, to run between batches outside the inference frame:
        the model as it was opened (fp32 weights, gradients allowed), no batch running beside it. The
        job must leave the model as it found it (``explain.attribute`` does); the future gives its result."""
        future: Future = Future()
        with self._condition:
            if self._stopping:
                raise AlexNetError("the server is shutting down")
            self._jobs.append((job, future))
            self._condition.notify()
        return future

    def stop(self, timeout_s: float | None = None) -> None:
        """Answer what is queued, then end the worker (waits up to ``timeout_s``)."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _work(self) -> None:
        try:
            while True:
                with self.trained.running():  # eval mode, weights cast once, until a job needs the model
                    if not self.ready.is_set():
                        self._warm_up()
                        self.ready.set()
                    while (group := self._next_group()) is not None and group is not JOBS:
                        self._run(group)
                if group is None:
                    break
                self._run_jobs()
        except Exception as error:  # warm-up failed (out of memory, say): say so on /ready and to callers
            self.failure = f"{type(error).__name__}: {error}"
            log.exception("the model could not be warmed up")
            with self._condition:
                self._stopping = True
                for request in self._pending:
                    request.future.set_exception(AlexNetError(f"the model failed to start: {self.failure}"))
                self._pending.clear()
                for _, future in self._jobs:
                    future.set_exception(AlexNetError(f"the model failed to start: {self.failure}"))
                self._jobs.clear()

    def _run_jobs(self) -> None:
        while True:
            with self._condition:
                if not self._jobs:
                    return
                job, future = self._jobs.popleft()
            if not future.set_running_or_notify_cancel():  # its caller timed out and left
                continue
            try:
                future.set_result(job())
            except Exception as error:  # a failed job fails its caller, never the worker
                future.set_exception(error)

    def _warm_up(self) -> None:
        for count in sorted({self.max_batch, 1}, reverse=True):
            images = torch.zeros(count, *self.image_shape, device=self.trained.device)
            self.trained.logits(images.contiguous(memory_format=torch.channels_last))

    def _next_group(self) -> list[_Request] | None:
        """The next requests to run together (``JOBS``: jobs are queued; None: stopping and nothing left)."""
        with self._condition:
            while not self._pending and not self._jobs and not self._stopping:
                self._condition.wait()
            if self._jobs:
                return JOBS
            if not self._pending:
                return None
            deadline = self._pending[0].arrived + self.max_delay_s
            while self._pending_images < self.max_batch and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            group, count = [], 0
            while self._pending and (not group or count + len(self._pending[0].images) <= self.max_batch):
                request = self._pending.popleft()
                self._pending_images -= len(request.images)
                if request.future.set_running_or_notify_cancel():  # False: its caller timed out and left
                    group.append(request)
                    count += len(request.images)
            return group

    def _run(self, group: list[_Request]) -> None:
        if not group:
            return
        try:
            images = torch.cat([request.images for request in group])
            logits = []
            for start in range(0, len(images), self.max_batch):  # one request may hold more than a batch
                batch = images[start:start + self.max_batch].to(self.trained.device)
                logits.append(self.trained.logits(batch.contiguous(memory_format=torch.channels_last)).float().cpu())
                self.batches_run += 1
            self.images_run += len(images)
            rows = torch.cat(logits).split([len(request.images) for request in group])
        except Exception as error:  # a failed batch fails its requests, never the worker
            log.exception("a batch of %d images failed", sum(len(request.images) for request in group))
            for request in group:
                request.future.set_exception(error)
            return
        for request, row in zip(group, rows):
            request.future.set_result(row)
