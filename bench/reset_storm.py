#!/usr/bin/env python3
"""The benchmark's reset storm: connects to a server at a steady rate and
resets each connection at once (SO_LINGER 0, so close() sends RST instead
of FIN), as a port scanner or a crashing client does. Most resets land
while the connection still waits in the server's accept queue.

Run: python3 bench/reset_storm.py PORT [--rate 300] [--seconds 5] [--until-eof]
on 127.0.0.1. It prints "storming" once the first connection is reset, and
at the end one JSON line: how many connections it reset, how many failed,
and the rate it reached. With --until-eof it also stops as soon as its
stdin ends (the benchmark closes it once its good clients are done).
"""
import argparse
import json
import socket
import struct
import sys
import threading
import time

CONNECT_TIMEOUT_SECONDS = 1.0  # a full accept queue drops SYNs; do not wait for the retry
LINGER_RESET = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close() sends RST
MAX_CATCH_UP_SECONDS = 1.0  # when behind, go at once, but never bank more than this


def reset_one(port):
    """Connects and resets at once; returns the error text, or None."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_SECONDS)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        sock.connect(("127.0.0.1", port))
        return None
    except OSError as err:
        return str(err)
    finally:
        sock.close()


def storm(port, rate, seconds, stop):
    """Resets `rate` connections a second until `seconds` pass or `stop` is set."""
    resets = 0
    failures = 0
    first_error = None
    started = time.monotonic()
    deadline = started + seconds
    next_at = started
    while not stop.is_set():
        now = time.monotonic()
        if now >= deadline:
            break
        if next_at > now:
            time.sleep(next_at - now)
        next_at = max(next_at + 1.0 / rate, time.monotonic() - MAX_CATCH_UP_SECONDS)
        error = reset_one(port)
        if error is None:
            resets += 1
        else:
            failures += 1
            first_error = first_error or error
        if resets + failures == 1:
            print("storming", flush=True)
    elapsed = time.monotonic() - started
    return {
        "resets": resets,
        "failures": failures,
        "seconds": round(elapsed, 3),
        "resetsPerSec": round(resets / elapsed, 1),
        "targetPerSec": rate,
        "firstError": first_error,
    }


def main():
    parser = argparse.ArgumentParser(description="Reset connections to 127.0.0.1:PORT at a steady rate.")
    parser.add_argument("port", type=int)
    parser.add_argument("--rate", type=float, default=300.0, help="resets per second (default 300)")
    parser.add_argument("--seconds", type=float, default=5.0, help="longest run (default 5)")
    parser.add_argument("--until-eof", action="store_true", help="also stop when stdin ends")
    args = parser.parse_args()
    stop = threading.Event()
    if args.until_eof:
        def wait_for_eof():
            sys.stdin.buffer.read()
            stop.set()

        threading.Thread(target=wait_for_eof, daemon=True).start()
    print(json.dumps(storm(args.port, args.rate, args.seconds, stop)), flush=True)


if __name__ == "__main__":
    main()
