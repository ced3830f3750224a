"""roomcast: a backend's Python SDK for the roomcast real-time broker.

`roomcast.Server` has python-socketio's server surface (`emit`, `enter_room`,
`call`, `@rc.event`, `@rc.on(...)` handlers whose return value answers the
client's ack) over roomcast's gRPC API, so the backend runs anywhere and the
Socket.IO clients stay connected to roomcast's edges.
"""

from ._server import Connection, Delivery, Recipient, Server, Socket, UserStatus
from .errors import ApiError, RoomcastError, StreamError, TimeoutError

__all__ = [
    "ApiError",
    "Connection",
    "Delivery",
    "Recipient",
    "RoomcastError",
    "Server",
    "Socket",
    "StreamError",
    "TimeoutError",
    "UserStatus",
]
__version__ = "0.1.0"
