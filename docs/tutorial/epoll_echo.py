#!/usr/bin/env python3
"""An edge-triggered epoll line-echo server in plain Python, to point the
checker at (docs/tutorial/checklist.md):

    python3 docs/tutorial/epoll_echo.py 127.0.0.1:8007
    make check-server SERVER="python3 docs/tutorial/epoll_echo.py {addr}"

Each rule of the checklist is marked "# rule:" where it is kept. Left out
to stay short: a limit on line length, and a deadline for the drain."""
import select
import signal
import socket
import sys

ET, IN, OUT, RDHUP = select.EPOLLET, select.EPOLLIN, select.EPOLLOUT, select.EPOLLRDHUP
HIGH, LOW, BUDGET, CHUNK = 64 * 1024, 16 * 1024, 16, 64 * 1024


class Conn:
    def __init__(self, sock):
        self.sock, self.partial, self.out = sock, b"", bytearray()
        self.paused = self.eof = self.closing = self.fin = False


def flush(c):
    while c.out:  # rule: write until EAGAIN; EPOLLOUT (edge-triggered) brings us back
        try:
            n = c.sock.send(c.out)
        except BlockingIOError:
            return
        except ConnectionError:
            c.out.clear()
            c.eof = True
            return
        del c.out[:n]


def serve(c):
    """Reads, echoes, writes. True: read again without waiting for an event."""
    for _ in range(BUDGET):  # rule: a read budget
        if c.paused or c.eof:
            break
        try:
            data = c.sock.recv(CHUNK)
        except BlockingIOError:  # rule: read until EAGAIN
            break
        except ConnectionError:
            data = b""
        if not data:  # EOF: also how EPOLLRDHUP ends, since we read until EAGAIN
            c.eof = True
        elif not c.closing:  # draining: read and discard
            *lines, c.partial = (c.partial + data).split(b"\n")
            c.out += b"".join(line + b"\n" for line in lines)
            flush(c)
            c.paused = len(c.out) > HIGH  # backpressure
    else:
        return True  # rule: ... with the connection queued again
    flush(c)
    if c.closing and not c.out and not c.fin:
        c.sock.shutdown(socket.SHUT_WR)  # rule: close by shutdown (FIN after the echoes)
        c.fin = True
    if c.paused and len(c.out) <= LOW:
        c.paused = False
        return True  # rule: read again at once after resuming
    return False


def main():
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8007").rsplit(":", 1)
    lsock = socket.create_server((host, int(port)), backlog=1024)
    lsock.setblocking(False)
    print("listening on %s:%d" % lsock.getsockname()[:2], file=sys.stderr, flush=True)
    ep = select.epoll()
    ep.register(lsock, IN | ET)
    # SIGTERM as an event: the C-level handler writes a byte to `wake`.
    sig, wake = socket.socketpair()
    sig.setblocking(False)
    wake.setblocking(False)
    signal.set_wakeup_fd(wake.fileno())
    signal.signal(signal.SIGTERM, lambda *_: None)
    ep.register(sig, IN | ET)
    conns, again, draining = {}, set(), False
    while not (draining and not conns):
        # rule: EINTR. Python retries epoll_wait by itself (PEP 475).
        ready = {fd for fd, _ in ep.poll(0 if again else -1)} | again
        again = set()
        for fd in ready:
            if fd == sig.fileno():
                while True:
                    try:
                        sig.recv(64)
                    except BlockingIOError:
                        break
                if not draining:  # stop accepting, then drain every connection
                    draining = True
                    ep.unregister(lsock)
                    lsock.close()
                    for c in conns.values():
                        c.closing, c.partial = True, b""
                    again |= set(conns)
            elif not draining and fd == lsock.fileno():
                while True:  # rule: accept until EAGAIN
                    try:
                        s, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    s.setblocking(False)
                    conns[s.fileno()] = Conn(s)
                    ep.register(s, IN | OUT | RDHUP | ET)
            elif fd in conns:
                c = conns[fd]
                if serve(c):
                    again.add(fd)
                # rule: ... then wait (for the client's EOF) before close()
                if c.eof and not c.out and (c.fin or not c.closing):
                    ep.unregister(fd)
                    c.sock.close()
                    del conns[fd]
                    again.discard(fd)


if __name__ == "__main__":
    main()
