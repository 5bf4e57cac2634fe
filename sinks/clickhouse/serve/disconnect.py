"""Noticing that a reader's client went away, and cancelling its query then.

The request's thread hands the query to a worker thread and, while it runs,
looks at the client's socket every POLL_S: readable with nothing to read
means the peer closed (a FIN; a reset makes the read fail). It then cancels
the query's ticket in the engine and waits for the query to end, cancelling
again every RETRY_S, since a query that was only about to start when the
first KILL ran was not there to be killed. A client that sent its next
request already (pipelining) has data waiting, so it is taken as present.

Only readers are watched: ClickHouse cancels read-only HTTP queries on close,
and a writer's insert must land or fail for its own reasons.
"""

from __future__ import annotations

import concurrent.futures
import logging
import select
import socket
import threading
from collections.abc import Callable
from typing import Final, TypeVar

from sinks.clickhouse.serve.cancellation import Ticket
from sinks.clickhouse.serve.errors import ServeError

log = logging.getLogger(__name__)

POLL_S: Final = 0.1
RETRY_S: Final = 1.0

T = TypeVar("T")


def client_gone(connection: socket.socket) -> bool:
    """True when the client has closed its side: a result it can no longer receive is not worth making."""
    # poll first: recv on a socket with a timeout waits for data, whatever its flags
    # (poll, not select: select() refuses descriptors above 1023 in a busy process)
    try:
        poller = select.poll()
        poller.register(connection, select.POLLIN)
        if not poller.poll(0):
            return False
        peeked: bytes = connection.recv(1, socket.MSG_PEEK)
    except OSError:
        return True
    return not peeked


def _settle(future: concurrent.futures.Future[T], run: Callable[[], T]) -> None:
    try:
        result = run()
    except BaseException as exc:  # handed to the request's thread, which raises it there
        future.set_exception(exc)
    else:
        future.set_result(result)


def run_watched(
    run: Callable[[Ticket], T],
    cancel: Callable[[Ticket], None],
    connection: socket.socket,
    *,
    poll_s: float = POLL_S,
    retry_s: float = RETRY_S,
) -> T | None:
    """`run(ticket)`'s result, or None when the client went away first (the query then cancelled).

    Raises what `run` raised while the client was there.
    """
    ticket = Ticket()
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    worker = threading.Thread(
        target=_settle, args=(future, lambda: run(ticket)), name="tykpulse-serve-query", daemon=True
    )
    worker.start()
    while True:
        try:
            return future.result(timeout=poll_s)
        except concurrent.futures.TimeoutError:
            if client_gone(connection):
                break
    log.debug("client closed the connection while its query ran; cancelling ticket=%s", ticket.id)
    warned = False
    while not future.done():
        try:
            cancel(ticket)
        except ServeError as exc:
            # the query still ends by itself, at the latest at its max_execution_time
            if not warned:
                log.warning("could not cancel a query whose client went away: %s", exc.message)
                warned = True
        concurrent.futures.wait([future], timeout=retry_s)
    return None
