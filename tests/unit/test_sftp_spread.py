"""The first process hands each accepted connection to the least loaded process.

Both sides in one event loop on real sockets: a ``Dispatcher`` on a listening
socket with one worker's pair, a ``Receiver`` on the pair's other end, and a
``serve`` per side that holds each connection until its client closes.
(``tests/functional/test_service.py`` does the same with real processes.)
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from qprserver.sftp.spread import Dispatcher, Receiver, socket_pair


@dataclass
class Side:
    """What one process serves: the number of each connection it got, open or not."""

    got: list[int] = field(default_factory=list)
    open: int = 0

    async def serve(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        self.open += 1
        try:
            number = int((await reader.readline()).decode())
            self.got.append(number)
            await reader.read()  # until the client closes
        finally:
            self.open -= 1
            writer.close()


@dataclass
class Spreading:
    dispatcher: Dispatcher
    receiver: Receiver
    pair: socket.socket  # the worker's end
    here: Side
    there: Side
    clients: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self, count: int) -> None:
        """Open ``count`` connections, each telling its number, and wait until served."""
        for _ in range(count):
            number = len(self.clients)
            _, writer = await asyncio.open_connection("127.0.0.1", self.dispatcher.port)
            writer.write(f"{number}\n".encode())
            self.clients.append(writer)
            await until(functools.partial(self.served, number))

    def served(self, number: int) -> bool:
        return number in self.here.got + self.there.got


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


@pytest.fixture
async def spreading() -> AsyncIterator[Spreading]:
    listening = socket.create_server(("127.0.0.1", 0))
    ours, theirs = socket_pair()
    here, there = Side(), Side()
    dispatcher = Dispatcher([listening], [ours])
    receiver = Receiver(theirs, dispatcher.port)
    dispatcher.start(here.serve)
    receiver.start(there.serve)
    state = Spreading(dispatcher, receiver, theirs, here, there)
    try:
        yield state
    finally:
        for writer in state.clients:
            writer.close()
        dispatcher.close()
        receiver.close()
        await asyncio.wait_for(dispatcher.wait_closed(), 10)
        await asyncio.wait_for(receiver.wait_closed(), 10)
        theirs.close()


async def test_connections_alternate_between_equally_loaded_processes(
    spreading: Spreading,
) -> None:
    await spreading.connect(8)
    assert (len(spreading.here.got), len(spreading.there.got)) == (4, 4)
    assert spreading.dispatcher.open_connections() == [4, 4]


async def test_the_next_connection_goes_where_one_closed(spreading: Spreading) -> None:
    await spreading.connect(4)
    first_there = spreading.there.got[0]
    spreading.clients[first_there].close()
    await until(lambda: spreading.dispatcher.open_connections() == [2, 1])
    await spreading.connect(1)
    assert spreading.there.got[-1] == 4
    assert spreading.dispatcher.open_connections() == [2, 2]


async def test_a_dead_worker_gets_no_more_connections(spreading: Spreading) -> None:
    await spreading.connect(2)
    spreading.receiver.close()
    spreading.pair.close()  # as when the worker process dies
    await until(lambda: spreading.dispatcher.open_connections()[1:] == [0])
    await spreading.connect(4)
    assert len(spreading.here.got) == 5
    assert spreading.dispatcher.open_connections()[0] == 5
