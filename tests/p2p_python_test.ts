/**
 * Interoperability: a Python peer written here from the protocol alone
 * (standard library only, the way a student writes one for the course) syncs
 * with two of our peers through our tracker. Files flow both ways: the Python
 * peer fetches from ours, and ours fetch from it.
 */

import assert from "node:assert/strict";
import { startCommand } from "../lib/scripts.ts";
import { haveCommand, randomBytes, sha256, waitUntil } from "./helpers.ts";
import {
  canonical,
  folderState,
  MIB,
  putFile,
  type Seen,
  startPeerScript,
  startTrackerScript,
  tempFolder,
} from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // seconds
const encoder = new TextEncoder();

/** A course-style peer: one tracker connection, a thread per file request. */
const PYTHON_PEER = String.raw`
import json, os, socket, sys, threading, time

tracker_ip, tracker_port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
interval = float(sys.argv[4])

def shared_files():
    files = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or name.endswith((".py", ".so", ".dll", ".part")):
            continue
        files.append({"name": name, "mtime": int(os.path.getmtime(path))})
    return files

def recv_line(sock, rest=b""):
    while b"\n" not in rest:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the end of the line")
        rest += chunk
    line, rest = rest.split(b"\n", 1)
    return line.decode(), rest

def serve_one(conn):
    with conn:
        name, _ = recv_line(conn)
        path = os.path.join(folder, os.path.basename(name))
        with open(path, "rb") as f:
            data = f.read()
        conn.sendall(("Content-Length: %d\n" % len(data)).encode() + data)

def serve(server):
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

def fetch(name, entry):
    with socket.create_connection((entry["ip"], entry["port"])) as sock:
        sock.sendall((name + "\n").encode())
        header, body = recv_line(sock)
        length = int(header.split(":")[1])
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("short transfer")
            body += chunk
    part = os.path.join(folder, name + ".part")
    with open(part, "wb") as f:
        f.write(body[:length])
    os.rename(part, os.path.join(folder, name))
    os.utime(os.path.join(folder, name), (entry["mtime"], entry["mtime"]))
    print("python peer fetched %s (%d bytes)" % (name, length), flush=True)

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen()
port = server.getsockname()[1]
threading.Thread(target=serve, args=(server,), daemon=True).start()
print("python peer listening on 127.0.0.1:%d" % port, flush=True)

tracker = socket.create_connection((tracker_ip, tracker_port))
announced = shared_files()
tracker.sendall((json.dumps({"port": port, "files": announced}) + "\n").encode())
rest = b""
while True:
    line, rest = recv_line(tracker, rest)
    directory = json.loads(line)
    for name, entry in directory.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path) or int(os.path.getmtime(path)) < entry["mtime"]:
            try:
                fetch(name, entry)
            except Exception as err:
                print("python peer could not fetch %s: %s" % (name, err), flush=True)
    time.sleep(interval)
    files = shared_files()
    message = {"port": port}
    if files != announced:
        message["files"] = announced = files
    tracker.sendall((json.dumps(message) + "\n").encode())
`;

Deno.test({
  name: "a Python peer written from the protocol syncs with our peers through our tracker",
  ignore: !haveCommand("python3"),
  async fn() {
    await using a = await tempFolder();
    await using b = await tempFolder();
    await using p = await tempFolder();
    const files: Record<string, [string, Uint8Array, number]> = {
      "ours.bin": [a.path, randomBytes(3 * MIB, 41), T0],
      "worker.txt": [b.path, encoder.encode("from our worker-mode peer\n"), T0 + 1],
      "from_python.txt": [p.path, encoder.encode("written by the Python peer's user\n"), T0 + 2],
      "python.bin": [p.path, randomBytes(512 * 1024, 42), T0 + 3],
    };
    for (const [name, [dir, bytes, mtime]] of Object.entries(files)) {
      await putFile(dir, name, bytes, mtime);
    }
    // As in the course, the peer's own code lives in the shared folder and is not shared.
    await Deno.writeTextFile(`${p.path}/peer.py`, PYTHON_PEER);
    await using tracker = await startTrackerScript(["--quiet"]);
    await using ours = await startPeerScript(a.path, tracker.port, { mode: "async" });
    await using worker = await startPeerScript(b.path, tracker.port, { mode: "worker" });
    await using python = await startCommand(
      "python3",
      [`${p.path}/peer.py`, "127.0.0.1", String(tracker.port), p.path, "0.3"],
      { label: "peer.py" },
    );
    const scripts = [ours, worker, python];
    const expected: Record<string, Seen> = {};
    for (const [name, [, bytes, mtime]] of Object.entries(files)) {
      expected[name] = { size: bytes.length, mtime, sha256: sha256(bytes) };
    }
    const shared = (state: Record<string, Seen | null>) => {
      const { "peer.py": _code, ...rest } = state;
      return rest;
    };
    await waitUntil(
      async () => {
        const states = await Promise.all([a, b, p].map((f) => folderState(f.path)));
        return states.every((s) => canonical(shared(s)) === canonical(expected));
      },
      20_000,
      "every file in every folder",
      () => scripts.map((s) => s.lines.join("\n")).join("\n---\n"),
    );
    assert.ok(python.lines.some((l) => l.includes("python peer fetched ours.bin (3145728 bytes)")));
    assert.ok(ours.lines.some((l) => /downloaded python\.bin from .*length checked/.test(l)));
    assert.ok(!python.lines.some((l) => l.includes("could not fetch")), python.lines.join("\n"));
  },
});
