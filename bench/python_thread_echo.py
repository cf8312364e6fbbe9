#!/usr/bin/env python3
"""Reference echo server for the benchmark's hostile part: Python's
socketserver.ThreadingTCPServer (one thread per connection).

Run: python3 bench/python_thread_echo.py [PORT]  (0 or nothing picks a free port);
prints "listening on 127.0.0.1:PORT".
"""
import signal
import socketserver
import sys

READ_BYTES = 64 * 1024  # bytes per recv(), as our server reads


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            # recv() returns b"" once the client has half-closed; then we are done.
            while True:
                data = self.request.recv(READ_BYTES)
                if not data:
                    return
                self.request.sendall(data)
        except OSError:
            # A client that reset its connection ends only its own thread; a traceback
            # per reset would flood stderr during the reset storm.
            return


class EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    # The default queue of 5 stalls a burst of connections.
    request_queue_size = 1024
    # Threads of connections still open must not keep the process alive at SIGTERM.
    daemon_threads = True


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with EchoServer(("127.0.0.1", port), EchoHandler) as server:
        host, port = server.server_address[:2]
        print(f"python ThreadingTCPServer echo listening on {host}:{port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
