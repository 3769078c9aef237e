"""taskhub for Python: the seed's queue API (`put`, `get(timeout=...)`, `queue.Empty`) on a
taskhub hub, over authenticated WebSockets (docs/protocol.md).

    import taskhub
    hub = taskhub.connect("ws://127.0.0.1:7878", key="...")
    tasks, results = hub.queue("tasks"), hub.queue("results")
    tasks.put(3411, kind="square", reply_to="results")
    print(results.get(timeout=10))
"""

from queue import Empty

from ._protocol import (
    AuthError,
    ConnectionClosed,
    Credentials,
    HubError,
    ProtocolError,
    TaskhubError,
    credentials,
)
from .client import Hub, Message, Queue, Subscription, TaskFailed, connect

__all__ = [
    "AuthError",
    "ConnectionClosed",
    "Credentials",
    "Empty",
    "Hub",
    "HubError",
    "Message",
    "ProtocolError",
    "Queue",
    "Subscription",
    "TaskFailed",
    "TaskhubError",
    "connect",
    "credentials",
]
__version__ = "0.1.0"
