"""The control side: which replicas exist, which are healthy, and keeping N of them.

- `api`: the contract the admin surfaces (HTTP admin API, admin socket) use.
- `health`: the pure health state machine (heartbeats, passive and immediate signals).
- `cluster`: the controller: replicas from a provider, health, self-healing, table swaps.
- `classic`: the classic spec's admin routes (/rep, /add, /rm) on top of the controller.
- `adminsock`: the admin unix socket, one command a line.
"""
