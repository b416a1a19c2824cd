"""The two transport protocols a relay sits between, for either engine.

Once both sides are logged in, the client's and the server's transports are handed to these
protocols: bytes go straight to the relay's callbacks, and a side whose peer cannot keep up
stops the other side's reading. What a lost connection means is the relay's to say.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class Sided(Protocol):
    client: Any          # the client's transport
    server: Any          # the upstream's transport
    closed: bool

    @property
    def holding(self) -> bool:
        """A statement waits for a decision: client reading stays paused meanwhile."""

    def client_data(self, data: bytes) -> None: ...
    def server_data(self, data: bytes) -> None: ...
    def client_lost(self) -> None: ...
    def server_lost(self) -> None: ...


def attach(relay: Sided, client_buffered: bytes, server_buffered: bytes,
           high_water: int) -> None:
    """Hand both transports to the relay; bytes the login's stream readers read ahead are
    the relay's first data. ``high_water``: the write buffer at which the other side's
    reading pauses."""
    relay.client.set_protocol(ClientSide(relay))
    relay.server.set_protocol(ServerSide(relay))
    relay.client.set_write_buffer_limits(high=high_water)
    relay.server.set_write_buffer_limits(high=high_water)
    relay.client.resume_reading()
    relay.server.resume_reading()
    if server_buffered:
        relay.server_data(server_buffered)
    if client_buffered:
        relay.client_data(client_buffered)


class ClientSide(asyncio.Protocol):
    def __init__(self, relay: Sided) -> None:
        self.relay = relay
        # The relay's own method: the event loop keeps the data_received it finds when the
        # protocol is set, so each chunk costs one Python call, not two.
        self.data_received = relay.client_data  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:
        self.relay.client_data(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.client_lost()

    def pause_writing(self) -> None:
        self.relay.server.pause_reading()

    def resume_writing(self) -> None:
        if not self.relay.closed:
            self.relay.server.resume_reading()


class ServerSide(asyncio.Protocol):
    def __init__(self, relay: Sided) -> None:
        self.relay = relay
        self.data_received = relay.server_data  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:
        self.relay.server_data(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.relay.closed:
            self.relay.server_lost()

    def pause_writing(self) -> None:
        if not self.relay.holding:
            self.relay.client.pause_reading()

    def resume_writing(self) -> None:
        if not self.relay.closed and not self.relay.holding:
            self.relay.client.resume_reading()
