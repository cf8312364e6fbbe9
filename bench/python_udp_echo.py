#!/usr/bin/env python3
"""Reference UDP echo server for the benchmark: Python's socketserver.UDPServer,
one datagram handled at a time in one thread, the handout's own model.

Run: python3 bench/python_udp_echo.py [PORT]  (0 or nothing picks a free port);
prints "listening on 127.0.0.1:PORT (udp)".
"""
import signal
import socket
import socketserver
import sys

SOCKET_BUFFER_BYTES = 1024 * 1024  # kernel receive queue asked for, as udp_echo_server.ts asks


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        # For UDP the request is the datagram and the server's one socket.
        data, sock = self.request
        sock.sendto(data, self.client_address)


class EchoServer(socketserver.UDPServer):
    # The default of 8,192 bytes would cut longer datagrams short.
    max_packet_size = 65_507

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        super().server_bind()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with EchoServer(("127.0.0.1", port), EchoHandler) as server:
        host, port = server.server_address[:2]
        print(f"python UDPServer echo listening on {host}:{port} (udp)", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
