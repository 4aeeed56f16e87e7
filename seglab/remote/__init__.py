"""Remote servers over SSH: one asyncssh connection per host and what rides on it.

:mod:`~seglab.remote.connection` keeps the connection (states, keepalives, reconnect),
:mod:`~seglab.remote.forward` forwards the remote Docker socket to a private local one
(and TCP ports such as Jupyter's to 127.0.0.1),
:mod:`~seglab.remote.executor` runs telemetry commands over it, :mod:`~seglab.remote.files`
reads run directories over SFTP, :mod:`~seglab.remote.status` reports a host's versions, and
:mod:`~seglab.remote.trust` adds host keys to known_hosts, and
:mod:`~seglab.remote.manager` ties them together per inventory (``RemoteHosts``).
"""

from __future__ import annotations
