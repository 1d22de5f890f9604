#!/usr/bin/env python3
"""The TCP states of "The TCP you need" (tcp-primer.md), made on loopback
and shown by `ss -tni`, as they happen.

    python3 docs/tutorial/tcp_states.py [data|window|fin|rst|all]

Each scenario opens a fresh listener on a free port, one client and the
server's end of it (accepted here, in the same process: nothing runs but
the kernel's TCP), does one thing, and prints the `ss` command it ran and
its output. Port numbers and timings change from run to run.
"""

import socket
import subprocess
import sys
import time


def ss(ports, flags="-tni"):
    """Runs ss for the two ends of one connection (server port, client
    port), prints the command and its output."""
    s, c = ports
    where = f"( sport = :{s} and dport = :{c} ) or ( sport = :{c} and dport = :{s} )"
    cmd = ["ss", flags, "state", "all", where]
    print(f"$ ss {flags} state all '{where}'")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    # ss pads lines to the terminal's width: drop the padding.
    print("\n".join(line.rstrip() for line in out.splitlines()))


def pair():
    """A listener, a client connected to it, and the server's end."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = listener.accept()
    listener.close()
    ports = (port, client.getsockname()[1])
    print(f"# client 127.0.0.1:{ports[1]} -> server 127.0.0.1:{port}")
    return ports, client, server


def data():
    """Bytes in flight: Recv-Q is what the server has not read yet."""
    ports, client, server = pair()
    client.sendall(b"hello\n")
    time.sleep(0.1)
    print("# the client sent 'hello\\n'; the server has not read it")
    ss(ports)
    server.recv(100)
    print("# the server read it")
    ss(ports)


def window():
    """The windows: a server that does not read closes the client's window."""
    ports, client, server = pair()
    client.setblocking(False)
    sent = 0
    chunk = b"x" * 65536
    while True:
        try:
            sent += client.send(chunk)
        except BlockingIOError:
            break
    time.sleep(0.2)  # let the last window probes settle
    print(f"# the client sent {sent} bytes without blocking, then EAGAIN; the server reads nothing")
    ss(ports)
    server.setblocking(False)
    got = 0
    while True:
        try:
            got += len(server.recv(1 << 20))
        except BlockingIOError:
            break
    time.sleep(0.2)
    print(f"# the server read {got} bytes: the window opens again, the rest moves")
    ss(ports)


def fin():
    """FIN, half-close, CLOSE-WAIT, then TIME-WAIT."""
    ports, client, server = pair()
    client.shutdown(socket.SHUT_WR)
    time.sleep(0.1)
    print("# the client called shutdown(SHUT_WR): its FIN is sent and acknowledged")
    ss(ports)
    assert server.recv(100) == b""  # EOF: the read returns 0
    server.sendall(b"still here\n")
    print(f"# the server read EOF (0 bytes) and can still send: the client got {client.recv(100)!r}")
    time.sleep(2)
    print("# two seconds later the server still has not closed: CLOSE-WAIT stays for as long as it does not")
    ss(ports)
    server.close()
    time.sleep(0.1)
    print("# the server closed: its FIN; the client, who closed first, keeps TIME-WAIT")
    ss(ports, "-tnio")
    client.close()


def rst():
    """RST: close() with unread input, or SO_LINGER 0."""
    ports, client, server = pair()
    client.sendall(b"unread\n")
    time.sleep(0.1)
    print("# the client sent 'unread\\n'; the server has not read it")
    ss(ports)
    server.close()
    time.sleep(0.1)
    print("# the server called close() with 7 unread bytes: RST, not FIN; both ends are gone")
    ss(ports)
    try:
        client.recv(100)
        print("# the client's read: no error")
    except ConnectionResetError as e:
        print(f"# the client's read: {e!r}")
    client.close()


SCENARIOS = {"data": data, "window": window, "fin": fin, "rst": rst}

if __name__ == "__main__":
    names = sys.argv[1:] or ["all"]
    if names == ["all"]:
        names = list(SCENARIOS)
    for name in names:
        print(f"### {name}")
        SCENARIOS[name]()
        print()
