"""taskhub for Python: the seed's queue API (`put`, `get(timeout=...)`, `queue.Empty`) on a
taskhub hub, over authenticated WebSockets (docs/protocol.md).

    import taskhub
    hub = taskhub.connect("ws://127.0.0.1:7878", key="...")
    tasks, results = hub.queue("tasks"), hub.queue("results")
    tasks.put(3411, kind="square", reply_to="results")
    print(results.get(timeout=10))

and workers:

    worker = taskhub.Worker("ws://127.0.0.1:7878", key="...", queues=["tasks"])

    @worker.handler("square")
    def square(n):
        return f"{n} * {n} = {n * n}"

    worker.run()    # or: python -m taskhub worker --queue tasks square=mymodule:square
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
from .worker import Task, TaskError, Worker

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
    "Task",
    "TaskError",
    "TaskFailed",
    "TaskhubError",
    "Worker",
    "connect",
    "credentials",
]
__version__ = "0.1.0"
