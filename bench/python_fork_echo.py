#!/usr/bin/env python3
"""Reference echo server for the benchmark: Python's socketserver.ForkingTCPServer,
the lab's own model (one forked child per connection).

Run: python3 bench/python_fork_echo.py [PORT]  (0 or nothing picks a free port);
prints "listening on 127.0.0.1:PORT".
"""
import signal
import socketserver
import sys

READ_BYTES = 64 * 1024  # bytes per recv(), as our server reads


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        # recv() returns b"" once the client has half-closed; then we are done.
        while True:
            data = self.request.recv(READ_BYTES)
            if not data:
                return
            self.request.sendall(data)


class EchoServer(socketserver.ForkingTCPServer):
    allow_reuse_address = True
    # The default queue of 5 stalls a burst of 500 connections for a minute.
    request_queue_size = 1024
    # The default of 40 children makes the parent wait for one to exit first.
    max_children = 1024


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with EchoServer(("127.0.0.1", port), EchoHandler) as server:
        host, port = server.server_address[:2]
        print(f"python ForkingTCPServer echo listening on {host}:{port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
