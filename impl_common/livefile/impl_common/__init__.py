"""Logic shared by livefile clients and server, without I/O: protocol machines, checkpoint
scheduling, close reasons, references, and the ``livefile`` command host."""
