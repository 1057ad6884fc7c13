"""The S3 listener's connections, with plain GETs and HEADs started eagerly.

aiohttp's `RequestHandler` serves a connection from one long-lived task (`start()`): the
protocol's `data_received` parses a request and wakes that task's waiter, and the task then
runs the request in a new task of its own (a new task per request keeps each request's
context variables apart) and awaits it. On Python 3.12+ that task starts eagerly; on 3.11
(ours) it costs a task, the waiter's wake-up and two more loop callbacks per request: most
of the 18-33 us per request that session 10 measured for `RequestHandler`'s plumbing.

`EagerRequestHandler` is the same protocol, but a GET or HEAD without a body (aiohttp's
parser decided that: `EMPTY_PAYLOAD`) that arrives while the connection is idle is started
from `data_received`, in an `EagerTask`: a task whose first step runs at once (3.12's
`eager_start`, backported: it is the current task while it runs, in a context of its own).
The request is aiohttp's own (`request_factory`, `_handle_request`, `finish_response`:
the same request object, S3 pipeline, response headers and bytes); only who starts it
changes. A small object's GET usually completes in that first step, so its answer is
written before `data_received` returns. Anything else (another method, a body, a parse
error, a request while another is in flight) is queued and served by `start()` exactly as
before; requests stay in order (one at a time per connection, as aiohttp serves them).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from asyncio import futures, tasks
from typing import Any

from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import _PAYLOAD_ACCESS_ERROR, RequestHandler

EAGER_METHODS = frozenset(("GET", "HEAD"))
EAGER_NEEDED = sys.version_info < (3, 12)  # 3.12+: aiohttp starts every request's task eagerly


class EagerTask(tasks._PyTask):  # type: ignore[name-defined,misc]
    """A task whose first step runs in `__init__` (Python 3.12's `eager_start`): while it
    runs it is `asyncio.current_task()` (so `asyncio.timeout` and cancellation work as in
    any task), in `context`. If the coroutine finishes in that step the task is done when
    the constructor returns; otherwise it goes on as an ordinary task."""

    def __init__(self, coro: Any, loop: asyncio.AbstractEventLoop,
                 context: contextvars.Context) -> None:
        futures._PyFuture.__init__(self, loop=loop)  # type: ignore[attr-defined]
        self._name = "eager-request"
        self._num_cancels_requested = 0
        self._must_cancel = False
        self._fut_waiter = None
        self._coro = coro
        self._context = context
        tasks._register_task(self)
        context.run(self._Task__step)  # what `Task.__init__` schedules with call_soon


class EagerRequestHandler(RequestHandler):
    """aiohttp's connection protocol, starting bodiless GETs and HEADs eagerly (module doc)."""

    _eager: EagerTask | None = None  # the request started here, while it runs
    _starting = False  # in `_serve_queued` (reading resumed there may parse more)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # start() is serving (or about to): its turn
            super().data_received(data)
            return
        self._waiter = None  # parsed and queued as always, but start() is not woken
        try:
            super().data_received(data)
        finally:
            self._waiter = waiter
        if self._eager is not None or self._starting:
            return  # served in order once the request in flight is done
        if asyncio.current_task(self._loop) is None:
            self._serve_queued()
        elif self._messages and not waiter.done():  # from inside a task: start()'s turn
            waiter.set_result(None)

    def _serve_queued(self) -> None:
        """Start the queued requests that qualify, in order; wake start() for the first
        that does not (it serves the rest of the queue as it always did)."""
        self._starting = True
        try:
            while self._messages and self._eager is None and not self._force_close:
                message, payload = self._messages[0]
                if payload is not EMPTY_PAYLOAD or getattr(message, "method", None) \
                        not in EAGER_METHODS or self._upgraded:
                    break
                self._messages.popleft()
                self._start_one(message, payload)
        finally:
            self._starting = False
        waiter = self._waiter
        if self._messages and self._eager is None and waiter is not None \
                and not waiter.done():
            waiter.set_result(None)

    def _start_one(self, message: Any, payload: Any) -> None:
        """start()'s steps for one request (aiohttp 3.14, `RequestHandler.start`), with the
        request's task started eagerly."""
        loop = self._loop
        if self._parser is not None:
            self._parser.message_consumed()
        if self._buffer_paused and len(self._messages) <= self._msg_queue_resume_size:
            self._resume_reading_if_drained()
        start = loop.time() if self._logging_enabled else None
        assert self._manager is not None and self._request_factory is not None
        assert self._request_handler is not None
        self._manager.requests_count += 1
        request = self._request_factory(message, payload, self, StreamWriter(self, loop),
                                        self._task_handler)  # type: ignore[arg-type]
        coro = self._handle_request(request, start, self._request_handler)
        task = EagerTask(coro, loop, contextvars.copy_context())
        if task.done():
            self._finish_one(task, request, payload)
            return
        self._eager = task
        task.add_done_callback(lambda t: self._eager_done(t, request, payload))

    def _eager_done(self, task: EagerTask, request: web.BaseRequest, payload: Any) -> None:
        self._eager = None
        self._finish_one(task, request, payload)
        if not self._force_close:
            self._serve_queued()

    def _finish_one(self, task: EagerTask, request: web.BaseRequest, payload: Any) -> None:
        """start()'s steps after a request: keep-alive, the payload closed, the timer."""
        request._task = None  # type: ignore[assignment]
        if task.cancelled():
            self.force_close()
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, Exception) and not isinstance(exc, ConnectionError):
                self.log_exception("Unhandled exception", exc_info=exc)
            self.force_close()
            return
        resp, reset = task.result()
        if reset:
            self.force_close()
            return
        self._keepalive = bool(resp.keep_alive)
        payload.set_exception(_PAYLOAD_ACCESS_ERROR)
        if self._keepalive and not self._close and not self._force_close:
            close_time = self._loop.time() + self._keepalive_timeout
            self._next_keepalive_close_time = close_time
            if self._keepalive_handle is None:
                self._keepalive_handle = self._loop.call_at(close_time,
                                                            self._process_keepalive)
        else:
            self.force_close()

    def _process_keepalive(self) -> None:
        if self._eager is not None:  # a request in flight is not idle: look again later
            self._keepalive_handle = self._loop.call_at(
                self._loop.time() + self._keepalive_timeout, self._process_keepalive)
            return
        super()._process_keepalive()


class EagerServer(web.Server):
    """`web.Server` whose connections are `EagerRequestHandler`s (Python 3.11 only: the
    task internals it leans on are 3.11's, and 3.12's aiohttp starts requests eagerly)."""

    def __call__(self) -> RequestHandler:
        return EagerRequestHandler(self, loop=self._loop, **self._kwargs)
