#!/usr/bin/env python3
"""Scripted clients for the tutorial's steps (docs/tutorial/).

nc is enough to type lines; these do what is hard to type: exact bursts,
split lines, a client that does not read, a signal at the right moment.
Each prints what it saw, so you can compare with the page.

usage:
  client.py burst ADDR BYTES     send BYTES bytes (a line of x's) in one write;
                                 keep the connection open; count the echo for 1 s
  client.py pingpong ADDR N [B]  "start\\n", then N 16-byte lines, B per write,
                                 each write after the echo of the one before
                                 and a 1 ms pause; then "stop\\n" (markers that
                                 show up in a trace)
  client.py split ADDR           "abc", a pause, "def\\n"; then "abc\\ndef\\n";
                                 then "bye\\npartial" and a half-close
  client.py slow ADDR MIB        send MIB MiB of 1 KiB lines without reading;
                                 after 1 s start reading, and check every byte
  client.py flood ADDR MIB [PID] send MIB MiB of 1 KiB lines without reading
                                 until the writes block (no progress for 1 s):
                                 say how many bytes got out, and with PID how
                                 much the server's VmRSS grew; then read it all
                                 back and check every byte
  client.py drain ADDR PID       leave echoes pending, send SIGTERM to PID,
                                 read to the end: every echo, then EOF or reset?
  client.py idle ADDR PID        "hello\\n" and its echo; 0.3 s later SIGTERM to
                                 PID; read to the end; close 0.3 s after EOF
  client.py count TRACE N        count the system calls in an `strace -f -o TRACE`
                                 file between the "start" and "stop" lines of
                                 a pingpong run, per message (N messages)

ADDR is HOST:PORT, e.g. 127.0.0.1:8003. Writes have no time limit (a
server that applies backpressure is right to block them); a read gives up
after 10 s with nothing new.
"""
import collections
import os
import re
import select
import signal
import socket
import sys
import threading
import time

# How long a read waits for the next byte before it gives up. Only reads
# wait with a limit: a write blocks for as long as the server takes, since
# a server that applies backpressure is right to stop us.
PATIENCE = 10.0


def connect(addr):
    host, port = addr.rsplit(":", 1)
    # No timeout on the socket: it is blocking, so a sendall of any size
    # waits for the server. Reads use select() for their own limit.
    s = socket.create_connection((host, int(port)))
    s.settimeout(None)
    return s


def wait_readable(s, seconds):
    return bool(select.select([s], [], [], seconds)[0])


def read_for(s, seconds):
    """Reads whatever arrives until `seconds` pass with nothing new."""
    got = bytearray()
    buf = bytearray(65536)
    while wait_readable(s, seconds):
        n = s.recv_into(buf)
        if n == 0:
            break
        got += buf[:n]
    return bytes(got)


def read_exactly(s, n, patience=PATIENCE):
    """Reads n bytes, or fewer if the stream ends or nothing arrives for
    `patience` seconds. One buffer of n bytes, filled in place."""
    got = bytearray(n)
    view = memoryview(got)
    pos = 0
    while pos < n and wait_readable(s, patience):
        k = s.recv_into(view[pos:], min(1 << 20, n - pos))
        if k == 0:
            break
        pos += k
    return bytes(view[:pos])


def read_to_end(s):
    """Reads until EOF or a reset: (the bytes, "EOF" or "RESET")."""
    got = bytearray()
    buf = bytearray(1 << 20)
    try:
        while wait_readable(s, PATIENCE):
            n = s.recv_into(buf)
            if n == 0:
                return bytes(got), "EOF"
            got += buf[:n]
        return bytes(got), f"nothing for {PATIENCE:.0f} s"
    except ConnectionResetError:
        return bytes(got), "RESET"


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def lines_of(mib, fill=b"x"):
    """MIB MiB of numbered 1 KiB lines."""
    return b"".join(b"%07d" % k + fill * 1016 + b"\n" for k in range(mib * 1024))


def burst(addr, size):
    s = connect(addr)
    data = b"x" * (size - 1) + b"\n"
    s.sendall(data)
    got = read_for(s, 1.0)
    print(f"sent {len(data)} bytes in one write; {len(got)} came back within 1 s")
    if len(got) < len(data):
        s.sendall(b"!")
        more = read_for(s, 1.0)
        print(f"sent 1 more byte; {len(more)} more came back")


def pingpong(addr, n, batch=1):
    s = connect(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"start\n")
    read_exactly(s, 6)
    line = b"0123456789abcde\n"
    for _ in range(n // batch):
        # The pause lets the server finish with one write, down to its
        # EAGAIN and epoll_wait, before the next arrives: without it, a
        # traced (so slowed-down) server can find the next line already
        # there, and skip those calls.
        time.sleep(0.001)
        s.sendall(line * batch)
        if read_exactly(s, len(line) * batch) != line * batch:
            sys.exit("echo differs")
    s.sendall(b"stop\n")
    read_exactly(s, 5)
    print(f"{n // batch * batch} lines echoed, {batch} per write")


def split(addr):
    s = connect(addr)
    s.sendall(b"abc")
    print("sent 'abc'          ->", read_for(s, 0.3))
    s.sendall(b"def\n")
    print("sent 'def\\n'        ->", read_for(s, 0.3))
    s.sendall(b"abc\ndef\n")
    print("sent 'abc\\ndef\\n'   ->", read_for(s, 0.3))
    s.sendall(b"bye\npartial")
    s.shutdown(socket.SHUT_WR)
    print("sent 'bye\\npartial', half-closed ->", read_for(s, 1.0))


def slow(addr, mib):
    s = connect(addr)
    data = lines_of(mib)
    sender = threading.Thread(target=s.sendall, args=(data,))
    sender.start()
    time.sleep(1.0)
    print("not reading for 1 s ...")
    got = read_exactly(s, len(data))
    sender.join()
    print(f"sent {len(data)} bytes; {len(got)} came back;",
          "identical" if got == data else "DIFFERENT")


def flood(addr, mib, pid=None):
    """Sends without reading until the writes block (no progress for 1 s)
    or everything is sent; says how far it got, and with PID how much the
    server's VmRSS grew meanwhile; then reads it all back."""
    s = connect(addr)
    data = memoryview(lines_of(mib))
    rss0 = vm_rss_kib(pid) if pid else None
    sent = [0]

    def send():
        while sent[0] < len(data):
            sent[0] += s.send(data[sent[0]:sent[0] + 65536])

    sender = threading.Thread(target=send)
    sender.start()
    last, still = -1, 0.0
    while sender.is_alive() and still < 1.0:
        time.sleep(0.1)
        still = still + 0.1 if sent[0] == last else 0.0
        last = sent[0]
    if sender.is_alive():
        print(f"{sent[0]} bytes ({sent[0] / 2**20:.1f} MiB) of {len(data)} got out,",
              "then the writes blocked for 1 s")
    else:
        time.sleep(1.0)  # let the server read what is still in flight
        print(f"all {len(data)} bytes ({len(data) / 2**20:.0f} MiB) got out without blocking")
    if pid:
        grew = vm_rss_kib(pid) - rss0
        print(f"the server's VmRSS grew by {grew} KiB ({grew / 1024:.1f} MiB)")
    got = read_exactly(s, len(data))
    sender.join()
    print(f"{len(got)} bytes came back;",
          "identical" if got == data else "DIFFERENT")


def drain(addr, pid):
    s = connect(addr)
    s.sendall(b"hello\n")
    print("echo:", read_exactly(s, 6))
    # Lines the server must echo but cannot, because we do not read yet.
    data = b"".join(b"%07d" % k + b"y" * 120 + b"\n" for k in range(200000))
    sender = threading.Thread(target=lambda: s.sendall(data))
    sender.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGTERM)
    print(f"sent SIGTERM to {pid}")
    got, end = read_to_end(s)
    sender.join()
    whole = got == data[:len(got)] and len(got) % 128 == 0
    print(f"{len(got) // 128} lines of {len(data) // 128} came back",
          f"({'whole lines, in order' if whole else 'NOT a prefix of what was sent'}),",
          f"then {end}")
    s.close()


def idle(addr, pid):
    """An idle client during a drain: the trace in step 6."""
    s = connect(addr)
    s.sendall(b"hello\n")
    print("echo:", read_exactly(s, 6))
    time.sleep(0.3)
    os.kill(pid, signal.SIGTERM)
    print(f"sent SIGTERM to {pid}")
    t0 = time.monotonic()
    got, end = read_to_end(s)
    print(f"{len(got)} more bytes, then {end} after {time.monotonic() - t0:.3f} s;",
          "closing 0.3 s later")
    time.sleep(0.3)
    s.close()


def count(path, n):
    lines = open(path).read().splitlines()
    start = next(i for i, l in enumerate(lines) if '"start\\n"' in l)
    stop = next(i for i, l in enumerate(lines) if '"stop\\n"' in l and i > start)
    calls = collections.Counter()
    for line in lines[start + 1:stop]:
        line = re.sub(r"^\d+\s+", "", line)  # the thread id, with strace -f
        match = re.match(r"(\w+)\(", line)  # skips "<... resumed>", signals, exits
        if match:
            name = match.group(1)
            if "EAGAIN" in line:
                name += " (EAGAIN)"
            calls[name] += 1
    total = sum(calls.values())
    print(f"{total} calls for {n} messages: {total / n:.2f} per message")
    for name, k in sorted(calls.items()):
        print(f"  {name:22} {k / n:.2f}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    mode, addr, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if mode == "burst" and len(rest) == 1:
        burst(addr, int(rest[0]))
    elif mode == "pingpong" and len(rest) in (1, 2):
        pingpong(addr, *map(int, rest))
    elif mode == "split" and not rest:
        split(addr)
    elif mode == "slow" and len(rest) == 1:
        slow(addr, int(rest[0]))
    elif mode == "flood" and len(rest) in (1, 2):
        flood(addr, *map(int, rest))
    elif mode == "drain" and len(rest) == 1:
        drain(addr, int(rest[0]))
    elif mode == "idle" and len(rest) == 1:
        idle(addr, int(rest[0]))
    elif mode == "count" and len(rest) == 1:
        count(addr, int(rest[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
