"""The data path: client connections in, pooled replica connections out, bytes relayed.

- `upstream`: one replica as the proxy sees it: address, idle connection pool, counters.
- `client`: one client connection's request/response state machine.
- `server`: the listener, the current `Route`, and the one timer that enforces every timeout.
"""
