#!/usr/bin/env python3
"""Level-triggered against edge-triggered epoll, on one connection.

For docs/tutorial/epoll-in-the-kernel.md. mio always registers sockets
edge-triggered, so the level-triggered side of the comparison is made here,
with Python's thin wrapper over the same three system calls.

This serves one client and, like step 3's --buggy, reads at most 4096 bytes
per event. Run it under strace, and send it a burst from another terminal:

  strace -tt -e trace=epoll_ctl,epoll_wait,recvfrom,sendto \\
      python3 docs/tutorial/lt_vs_et.py [--et] [--listen 127.0.0.1:8009]
  python3 docs/tutorial/client.py burst 127.0.0.1:8009 10000

Level-triggered (the default): epoll_wait reports the socket again and again
while unread bytes remain, and all 10000 come back. Edge-triggered (--et):
one report, one read of 4096, then epoll_wait sleeps with 5904 bytes unread.
The server gives up after 3 s without an event.
"""
import select
import socket
import sys

args = sys.argv[1:]
edge = "--et" in args
host, port = "127.0.0.1", 8009
if "--listen" in args:
    host, port = args[args.index("--listen") + 1].rsplit(":", 1)
listener = socket.create_server((host, int(port)))
print("listening on %s:%d" % listener.getsockname(), file=sys.stderr, flush=True)
conn, _ = listener.accept()
conn.setblocking(False)
ep = select.epoll()
ep.register(conn.fileno(), select.EPOLLIN | (select.EPOLLET if edge else 0))
while ep.poll(3.0):
    try:
        data = conn.recv(4096)  # one read per event, as in step 3 --buggy
    except BlockingIOError:
        continue
    if not data:
        break
    conn.sendall(data)
