"""The livefile resource manager and its backends: filesystem storage, SQLite catalog,
in-process status bus, quotas and upload contexts."""
