/**
 * Interoperability, both ways round, with Python programs written from the
 * protocol alone (standard library only, the way the course's are):
 * - a Python peer (`tests/fixtures/python_peer.py`) syncs with two of our
 *   peers through our tracker; files flow both ways;
 * - two of our peers sync through a course-style Python tracker, which also
 *   takes a changed file list on a KeepAlive.
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
  startPythonPeer,
  startTrackerScript,
  tempFolder,
} from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // seconds
const encoder = new TextEncoder();

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
    await using tracker = await startTrackerScript(["--quiet"]);
    await using ours = await startPeerScript(a.path, tracker.port, { mode: "async" });
    await using worker = await startPeerScript(b.path, tracker.port, { mode: "worker" });
    // As in the course, the peer's own code lives in the shared folder (as peer.py) and is not shared.
    await using python = await startPythonPeer(p.path, tracker.port, { interval: 0.3 });
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

/**
 * A course-style tracker: a thread per connection, newline-delimited JSON,
 * a peer known by its socket's IP and the port in its message, a strictly
 * newer mtime replaces an entry, every message answered with the whole
 * directory, and `files` taken on any message (Init or KeepAlive).
 */
const PYTHON_TRACKER = String.raw`
import json, socket, threading

lock = threading.Lock()
directory = {}  # name -> {"ip": ..., "port": ..., "mtime": ...}

def handle(conn, addr):
    ip = addr[0]
    rest = b""
    first = True
    with conn:
        while True:
            while b"\n" not in rest:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                rest += chunk
            line, rest = rest.split(b"\n", 1)
            try:
                message = json.loads(line)
                port = message["port"]
            except (ValueError, KeyError, TypeError):
                return  # invalid input closes this connection only
            with lock:
                for f in message.get("files", []):
                    entry = directory.get(f["name"])
                    if entry is None or f["mtime"] > entry["mtime"]:
                        directory[f["name"]] = {"ip": ip, "port": port, "mtime": f["mtime"]}
                reply = json.dumps(directory) + "\n"
            conn.sendall(reply.encode())
            if "files" in message:
                kind = "Init" if first else "KeepAlive"
                print("python tracker: %s from %s:%d with %d files" % (kind, ip, port, len(message["files"])), flush=True)
            first = False

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen()
print("python tracker listening on 127.0.0.1:%d" % server.getsockname()[1], flush=True)
while True:
    conn, addr = server.accept()
    threading.Thread(target=handle, args=(conn, addr), daemon=True).start()
`;

Deno.test({
  name:
    "two of our peers sync through a course-style Python tracker, a new file announced on a KeepAlive too",
  ignore: !haveCommand("python3"),
  async fn() {
    await using a = await tempFolder();
    await using b = await tempFolder();
    await using code = await tempFolder();
    await Deno.writeTextFile(`${code.path}/tracker.py`, PYTHON_TRACKER);
    const files: Record<string, [string, Uint8Array, number]> = {
      "from_a.bin": [a.path, randomBytes(2 * MIB, 51), T0],
      "from_b.txt": [b.path, encoder.encode("written on b\n"), T0 + 1],
    };
    for (const [name, [dir, bytes, mtime]] of Object.entries(files)) {
      await putFile(dir, name, bytes, mtime);
    }
    // Both hold "both.txt": b's is newer, so the tracker lists b's and a fetches it.
    const newer = encoder.encode("the newer copy, from b\n");
    await putFile(a.path, "both.txt", encoder.encode("the older copy, on a\n"), T0 + 2);
    await putFile(b.path, "both.txt", newer, T0 + 3);
    await using tracker = await startCommand(
      "python3",
      [`${code.path}/tracker.py`],
      { label: "tracker.py" },
    );
    await using peerA = await startPeerScript(a.path, tracker.port, { mode: "async" });
    await using peerB = await startPeerScript(b.path, tracker.port, { mode: "worker" });
    const scripts = [tracker, peerA, peerB];
    const expected: Record<string, Seen> = {
      "both.txt": { size: newer.length, mtime: T0 + 3, sha256: sha256(newer) },
    };
    for (const [name, [, bytes, mtime]] of Object.entries(files)) {
      expected[name] = { size: bytes.length, mtime, sha256: sha256(bytes) };
    }
    const converged = () =>
      waitUntil(
        async () => {
          const states = await Promise.all([a, b].map((f) => folderState(f.path)));
          return states.every((s) => canonical(s) === canonical(expected));
        },
        15_000,
        "both folders to hold every file, bytes and mtimes",
        () => scripts.map((s) => s.lines.join("\n")).join("\n---\n"),
      );
    await converged();
    // A file added later reaches the tracker on a KeepAlive carrying the new list.
    const late = randomBytes(100 * 1024, 52);
    await putFile(b.path, "late.bin", late, T0 + 4);
    expected["late.bin"] = { size: late.length, mtime: T0 + 4, sha256: sha256(late) };
    await converged();
    // b told the tracker on its one connection, in a KeepAlive, not in a second Init.
    assert.equal(peerB.lines.filter((l) => l.includes("connected to tracker")).length, 1);
    assert.ok(
      tracker.lines.includes(`python tracker: KeepAlive from 127.0.0.1:${peerB.port} with 4 files`),
      tracker.lines.join("\n"),
    );
    assert.ok(peerA.lines.some((l) => /downloaded late\.bin from .*length checked/.test(l)));
  },
});
