#!/usr/bin/env python3
"""A scripted client session, traced with strace: `make strace`.

Starts reactor-echo under `strace -f -tt` at `--log-level trace`, tracing
the calls of its start-up (socket, bind, listen, epoll_create1, socketpair,
setsockopt and the rest of SYSCALLS below) and of its event loop, and talks
to it over loopback in six steps:

  1. connect
  2. a split line: "abc", then "def\\n"            (拆包)
  3. a coalesced packet: "abc\\ndef\\n"              (粘包)
  4. a slow reader: sends megabytes without reading, so the server pauses
     it (backpressure), then reads everything back
  5. a half-close: "bye\\npartial", shutdown(SHUT_WR), read to EOF
  6. a graceful drain: a second slow reader leaves echoes owed, then
     SIGTERM; the server flushes them, sends FIN, then closes

Two files are written: OUTPUT_FILE, the trace, with a "### step N: ..."
line before each step's syscalls, and OUTPUT_FILE with the extension .log,
the server's log: its trace narration names each connection's token (the
data.u64 of epoll_wait) and fd, so the two can be read side by side. The
log's own writes to stderr (write(2, ...)) are left out of the trace copy;
they would only repeat the log. strace stamps a call when it starts, so an
epoll_wait that sleeps into the next step is listed just before that
step's header. docs/syscalls.md walks through the trace line by line.

`make strace` writes target/strace.txt and target/strace.log; the copy
that docs/syscalls.md quotes, docs/strace.txt (and docs/strace.log), is
regenerated only on purpose:
    python3 scripts/strace_session.py target/release/reactor-echo docs/strace.txt

usage: strace_session.py SERVER_BINARY OUTPUT_FILE
"""
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

# Start-up: the listening socket (socket, setsockopt, fcntl, bind, listen,
# getsockname), the files it opens (openat: the loader's libraries, somaxconn,
# /dev/null), the open-file limit (prlimit64), epoll (epoll_create1), the
# signal handlers and their socketpair (rt_sigaction, socketpair). The loop:
# accept4, epoll_ctl, epoll_wait, reads and writes, shutdown, ioctl, close.
# docs/syscalls.md lists the same calls: keep the two in step.
SYSCALLS = ",".join([
    "socket", "setsockopt", "fcntl", "bind", "listen", "getsockname", "openat",
    "prlimit64", "epoll_create1", "socketpair", "rt_sigaction",
    "accept4", "epoll_ctl", "epoll_wait", "epoll_pwait",
    "read", "recvfrom", "write", "sendto", "writev",
    "shutdown", "ioctl", "close",
])
PAUSE = 0.3  # between steps, so each step's syscalls stand apart in the trace
LINE = b"x" * 1023 + b"\n"  # what the slow readers send, 1 KiB a line


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    server_bin, out_path = sys.argv[1], sys.argv[2]
    raw_path = out_path + ".raw"
    log_path = os.path.splitext(out_path)[0] + ".log"
    server = subprocess.Popen(
        ["strace", "-f", "-tt", "-e", "trace=" + SYSCALLS, "-o", raw_path,
         server_bin, "--listen", "127.0.0.1:0", "--log-level", "trace"],
        stderr=subprocess.PIPE, text=True)
    # The log is read on its own thread: at trace level it is long, and a
    # full pipe would stop the server in the middle of a write.
    log_lines = []
    listening = threading.Event()

    def read_log():
        for line in server.stderr:
            log_lines.append(line)
            if "listening on" in line:
                listening.set()
        listening.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    listening.wait(timeout=30)
    match = next((re.search(r"listening on (\S+)", l) for l in log_lines
                  if "listening on" in l), None)
    if not match:
        server.kill()
        sys.exit("server did not start:\n" + "".join(log_lines))
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
    b = slow_reader(addr)
    data = LINE * (8 << 10)
    sent = send_until_stalled(b, data)
    # Now read everything back; the server resumes, and the rest is sent meanwhile.
    received = 0
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

    step("step 6: SIGTERM while echoes are owed: the server flushes them, sends FIN, then closes")
    d = slow_reader(addr)
    # Lines, unread, until the server stops reading: echoes are owed to d.
    sent = send_until_stalled(d, LINE * (8 << 10))
    # `server` is strace; the signal goes to the traced server, its child.
    with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
        os.kill(int(f.read().split()[0]), signal.SIGTERM)
    # d gets the echo of every line the server had read (its unread input is
    # discarded), then EOF: a FIN, not a reset. a, idle, just gets EOF.
    d.setblocking(True)
    got = b""
    while True:
        chunk = d.recv(1 << 20)  # ConnectionResetError here would be a bug
        if not chunk:
            break
        got += chunk
    assert 0 < len(got) <= sent and got == LINE * (len(got) // len(LINE)), len(got)
    assert a.recv(10) == b""
    a.close()
    d.close()
    server.wait(timeout=30)
    reader.join(timeout=5)
    with open(log_path, "w") as f:
        f.writelines(log_lines)

    annotate(raw_path, out_path, steps)
    os.remove(raw_path)
    print(f"trace written to {out_path}, the server's log to {log_path} "
          f"(server exit status {server.returncode}; step 6 echoed {len(got)} of {sent} bytes)")
    if server.returncode != 0:
        sys.exit("the drain should have been complete (exit status 0)")
    # Step 6 is meant to signal while d is paused with echoes owed; say so if
    # the timing went otherwise (the log's last pause or resume before the
    # signal tells).
    before_signal = "".join(log_lines).split("SIGTERM: draining")[0]
    last = max(before_signal.rfind(" backpressured: "), before_signal.rfind(" resumed\n"))
    if last < 0 or before_signal.startswith(" resumed", last):
        print("warning: no echoes were owed when SIGTERM came; step 6 does not show the flush")


def slow_reader(addr):
    """A non-blocking client with a small receive buffer (set before connect,
    so the window it offers stays small): its echoes back up quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(addr)
    sock.setblocking(False)
    return sock


def send_until_stalled(sock, data):
    """Sends `data` without reading until every buffer on the way is full and
    the server has stopped reading (its output is over the high-water mark):
    no progress for half a second. Returns the bytes sent."""
    sent = 0
    stalled_since = None
    while sent < len(data):
        try:
            sent += sock.send(data[sent:sent + 65536])
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.time()
            if time.time() - stalled_since > 0.5:
                break
            time.sleep(0.01)
    return sent


def annotate(raw_path, out_path, steps):
    """Copies the trace, putting each step's title before its first syscall."""
    with open(raw_path) as f:
        lines = f.readlines()
    pending = list(steps)
    out = ["### start-up: the dynamic loader and Rust's runtime, the listening socket, "
           "epoll, the signal handlers and their socketpair, the spare fd\n"]
    for line in lines:
        # The log's own lines: they are in the .log file beside this one.
        if re.match(r"\d+\s+\S+ write\(2, ", line):
            continue
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
