#!/usr/bin/env python3
"""Scripted clients for the tutorial's steps (docs/tutorial/).

nc is enough to type lines; these do what is hard to type: exact bursts,
split lines, a client that does not read, a signal at the right moment.
Each prints what it saw, so you can compare with the page.

usage:
  client.py burst ADDR BYTES     send BYTES bytes (a line of x's) in one write;
                                 keep the connection open; count the echo for 1 s
  client.py pingpong ADDR N      "start\\n", then N round trips of a 16-byte
                                 line, then "stop\\n" (markers to cut a trace)
  client.py split ADDR           "abc", a pause, "def\\n"; then "abc\\ndef\\n";
                                 then "bye\\npartial" and a half-close
  client.py slow ADDR MIB        send MIB MiB of 1 KiB lines without reading;
                                 after 1 s start reading, and check every byte
  client.py drain ADDR PID       leave echoes pending, send SIGTERM to PID,
                                 read to the end: every echo, then EOF or reset?

ADDR is HOST:PORT, e.g. 127.0.0.1:8003.
"""
import os
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


def pingpong(addr, n):
    s = connect(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for marker in [b"start\n"]:
        s.sendall(marker)
        read_exactly(s, len(marker))
    line = b"0123456789abcde\n"
    t = time.perf_counter()
    for _ in range(n):
        s.sendall(line)
        if read_exactly(s, len(line)) != line:
            sys.exit("echo differs")
    dt = time.perf_counter() - t
    s.sendall(b"stop\n")
    read_exactly(s, 5)
    print(f"{n} round trips, {dt / max(n, 1) * 1e6:.1f} us each")


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


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    mode, addr, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if mode == "burst" and len(rest) == 1:
        burst(addr, int(rest[0]))
    elif mode == "pingpong" and len(rest) == 1:
        pingpong(addr, int(rest[0]))
    elif mode == "split" and not rest:
        split(addr)
    elif mode == "slow" and len(rest) == 1:
        slow(addr, int(rest[0]))
    elif mode == "drain" and len(rest) == 1:
        drain(addr, int(rest[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
