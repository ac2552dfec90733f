"""The entry of a worker process (``--jobs N``): watch the driver, then serve it cells.

Light on purpose: the watch starts before torch is imported (seconds), so a worker whose
driver is killed while it starts up ends as soon as one that is computing a cell does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from multiprocessing.connection import Connection

PARENT_POLL_SECONDS = 0.5


def watch_parent(parent: int) -> None:
    """End this process as soon as its driver is gone (it is reparented), however the driver died."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="watch-driver", daemon=True).start()


def main(pipe: Connection, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops us
    watch_parent(parent)
    from benchmark.executors import serve_cells

    serve_cells(pipe)
