"""Remote servers over SSH: one asyncssh connection per host and what rides on it.

:mod:`~seglab.remote.connection` keeps the connection (states, keepalives, reconnect, and
a one-line reason when it fails), :mod:`~seglab.remote.machine` is the host as a
:class:`~seglab.machines.base.Machine` (commands, SFTP files, port forwards, its engine),
:mod:`~seglab.remote.forward` forwards the remote Docker socket to a private local one
(and TCP ports such as Jupyter's to 127.0.0.1), :mod:`~seglab.remote.files` reads run
directories over SFTP, :mod:`~seglab.remote.status` reports a host's versions,
:mod:`~seglab.remote.trust` adds host keys to known_hosts,
:mod:`~seglab.remote.manager` ties them together per inventory (``RemoteHosts``), and
:mod:`~seglab.remote.bridge` serves them to synchronous code on the workstation's loop.
"""

from __future__ import annotations
