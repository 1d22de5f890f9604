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
  client.py drain ADDR PID       leave echoes pending, send SIGTERM to PID,
                                 read to the end: every echo, then EOF or reset?
  client.py count TRACE N        count the system calls in an `strace -f -o TRACE`
                                 file between the "start" and "stop" lines of
                                 a pingpong run, per message (N messages)

ADDR is HOST:PORT, e.g. 127.0.0.1:8003.
"""
import collections
import os
import re
import signal
import socket
import sys
import threading
import time


def connect(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def read_for(s, seconds):
    """Reads whatever arrives until `seconds` pass with nothing new."""
    s.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        pass
    s.settimeout(10)
    return got


def read_exactly(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(min(65536, n - len(got)))
        if not chunk:
            break
        got += chunk
    return got


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
    data = b"".join(b"%07d" % k + b"x" * 1016 + b"\n" for k in range(mib * 1024))
    sender = threading.Thread(target=s.sendall, args=(data,))
    sender.start()
    time.sleep(1.0)
    print("not reading for 1 s ...")
    got = read_exactly(s, len(data))
    sender.join()
    print(f"sent {len(data)} bytes; {len(got)} came back;",
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
    got, end = b"", "EOF"
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        end = "RESET"
    sender.join()
    whole = got == data[:len(got)] and len(got) % 128 == 0
    print(f"{len(got) // 128} lines of {len(data) // 128} came back",
          f"({'whole lines, in order' if whole else 'NOT a prefix of what was sent'}),",
          f"then {end}")
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
    elif mode == "drain" and len(rest) == 1:
        drain(addr, int(rest[0]))
    elif mode == "count" and len(rest) == 1:
        count(addr, int(rest[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
