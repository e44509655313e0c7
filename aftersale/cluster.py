"""The Dask cluster that `AFTERSALE_DASK_ADDRESS` names, for units of work that fan out.

Feature building and batch scoring cut their work into units that run anywhere the project
imports; with an address set they run as tasks of that `dask.distributed` scheduler's
workers, without it in this machine's processes. `distributed` is imported only when an
address is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

VARIABLE = "AFTERSALE_DASK_ADDRESS"
# Seconds to wait for the scheduler: long enough for a busy one, short enough to fail a
# misspelt address before a night's work waits on it.
CONNECT_TIMEOUT_S = 10


class ClusterError(RuntimeError):
    """The configured scheduler cannot be reached; the message names the variable."""


@contextmanager
def dask_client(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Client]:
    """A client of the scheduler at `address`, closed on leaving.

    Raises:
        ClusterError: No scheduler answers there, or the address is not one.
    """
    from distributed import Client
    from distributed.comm import get_address_host_port

    try:
        # A malformed address is told apart before a client is made: a client that never
        # started still tries to close itself when collected, noisily.
        get_address_host_port(address)
        client = Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        problem = str(error) or type(error).__name__
        raise ClusterError(
            f"{VARIABLE}: cannot reach a Dask scheduler at {address!r} ({problem})"
        ) from None
    try:
        yield client
    finally:
        client.close()
