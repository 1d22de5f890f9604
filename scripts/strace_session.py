#!/usr/bin/env python3
"""A scripted client session, traced with strace: `make strace`.

Starts reactor-echo under `strace -f -tt`, tracing only the syscalls that
matter to an event loop, and talks to it over loopback in six steps:

  1. connect
  2. a split line: "abc", then "def\\n"            (拆包)
  3. a coalesced packet: "abc\\ndef\\n"              (粘包)
  4. a slow reader: sends megabytes without reading, so the server pauses
     it (backpressure), then reads everything back
  5. a half-close: "bye\\npartial", shutdown(SHUT_WR), read to EOF
  6. a graceful drain: SIGTERM while a client still has an echo coming

The trace is written to the file named on the command line, with a
"### step N: ..." line before each step's syscalls. strace stamps a call
when it starts, so an epoll_wait that sleeps into the next step is listed
just before that step's header.
docs/syscalls.md walks through it line by line.

usage: strace_session.py SERVER_BINARY OUTPUT_FILE
"""
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import time

SYSCALLS = "accept4,read,recvfrom,write,sendto,writev,epoll_wait,epoll_pwait,epoll_ctl,shutdown,close,ioctl"
PAUSE = 0.3  # between steps, so each step's syscalls stand apart in the trace


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    server_bin, out_path = sys.argv[1], sys.argv[2]
    raw_path = out_path + ".raw"
    server = subprocess.Popen(
        ["strace", "-f", "-tt", "-e", "trace=" + SYSCALLS, "-o", raw_path,
         server_bin, "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True)
    line = ""
    while "listening on" not in line:
        line = server.stderr.readline()
        if not line:
            break
    match = re.search(r"listening on (\S+)", line)
    if not match:
        server.kill()
        sys.exit("server did not start: " + line)
    host, port = match.group(1).rsplit(":", 1)
    addr = (host, int(port))
    steps = []  # (time, title)

    def step(title):
        time.sleep(PAUSE)
        steps.append((datetime.datetime.now(), title))

    def expect(sock, want):
        got = b""
        while len(got) < len(want):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        assert got == want, (got[:80], want[:80])

    step("step 1: a client connects")
    a = socket.create_connection(addr)

    step('step 2: a split line, "abc" then "def\\n" (拆包)')
    a.sendall(b"abc")
    time.sleep(PAUSE)
    a.sendall(b"def\n")
    expect(a, b"abcdef\n")

    step('step 3: a coalesced packet, "abc\\ndef\\n" (粘包)')
    a.sendall(b"abc\ndef\n")
    expect(a, b"abc\ndef\n")

    step("step 4: a slow reader sends 8 MiB without reading (backpressure), then reads it all")
    b = socket.socket()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    b.connect(addr)
    b.setblocking(False)
    data = (b"x" * 1023 + b"\n") * (8 << 10)
    sent = received = 0
    # Send without reading until every buffer on the way is full and the
    # server has stopped reading (its output is over the high-water mark).
    stalled_since = None
    while sent < len(data):
        try:
            sent += b.send(data[sent:sent + 65536])
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.time()
            if time.time() - stalled_since > 0.5:
                break
            time.sleep(0.01)
    # Now read everything back; the server resumes, and the rest is sent meanwhile.
    while received < len(data):
        busy = False
        if sent < len(data):
            try:
                sent += b.send(data[sent:sent + 65536])
                busy = True
            except BlockingIOError:
                pass
        try:
            chunk = b.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
            busy = True
        except BlockingIOError:
            pass
        if not busy:
            time.sleep(0.001)
    assert received == len(data), (received, len(data))
    b.close()

    step('step 5: a half-close: "bye\\npartial", then shutdown(SHUT_WR)')
    c = socket.create_connection(addr)
    c.sendall(b"bye\npartial")
    c.shutdown(socket.SHUT_WR)
    expect(c, b"bye\n")
    assert c.recv(10) == b""
    c.close()

    step("step 6: SIGTERM starts the drain; the client gets its echo, then EOF")
    a.sendall(b"last\n")
    time.sleep(0.05)
    # `server` is strace; the signal goes to the traced server, its child.
    with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
        os.kill(int(f.read().split()[0]), signal.SIGTERM)
    expect(a, b"last\n")
    assert a.recv(10) == b""
    a.close()
    server.wait(timeout=15)
    server.stderr.close()

    annotate(raw_path, out_path, steps)
    os.remove(raw_path)
    print(f"trace written to {out_path} (server exit status {server.returncode})")


def annotate(raw_path, out_path, steps):
    """Copies the trace, putting each step's title before its first syscall."""
    with open(raw_path) as f:
        lines = f.readlines()
    pending = list(steps)
    out = ["### start-up: the dynamic loader and Rust's runtime, then the listener and the signal pipe join the epoll set\n"]
    for line in lines:
        m = re.match(r"(\d+)\s+(\d\d):(\d\d):(\d\d)\.(\d+)", line)
        if m and pending:
            t = datetime.datetime.now().replace(
                hour=int(m.group(2)), minute=int(m.group(3)), second=int(m.group(4)),
                microsecond=int(m.group(5)))
            while pending and t >= pending[0][0]:
                out.append("\n### " + pending.pop(0)[1] + "\n")
        out.append(line)
    for _, title in pending:
        out.append("\n### " + title + "\n")
    with open(out_path, "w") as f:
        f.writelines(out)


if __name__ == "__main__":
    main()
