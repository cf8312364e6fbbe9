/**
 * The P2P peer on its own, in this process, against the fake tracker and
 * fake holders of `p2p_helpers.ts`: the file server refuses every unsafe name in every
 * mode, hostile names in a directory are never written, bad transfers of
 * every kind are discarded and the next holder is used, and the Init and
 * KeepAlive messages carry the file list when they should.
 */

import assert from "node:assert/strict";
import { MODES } from "../lib/concurrency.ts";
import { writeAll } from "../lib/net.ts";
import { preview } from "../lib/log.ts";
import { downloadFile, LocalChangeError } from "../p2p/files.ts";
import { startPeer } from "../p2p/peer.ts";
import { type Directory, FEATURES } from "../p2p/protocol.ts";
import {
  concat,
  randomBytes,
  readAll,
  runScript,
  sha256,
  startScript,
  waitUntil,
  withTimeout,
} from "./helpers.ts";
import {
  fakeHolder,
  fakeTracker,
  folderState,
  holderReply,
  MIB,
  namesIn,
  putFile,
  tempFolder,
} from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // a fixed mtime, in seconds
const encoder = new TextEncoder();

/** What a file server did with one request. */
interface Answer {
  /** Every byte it sent. */
  bytes: Uint8Array;
  /** How it ended: "closed" (it finished sending) or "reset" (it dropped the connection). */
  ending: "closed" | "reset";
}

/** Errors that mean the server closed or reset the connection under us. */
function isClosedUnderUs(err: unknown): boolean {
  return err instanceof Deno.errors.ConnectionReset || err instanceof Deno.errors.BrokenPipe ||
    err instanceof Deno.errors.NotConnected;
}

/**
 * Asks a file server for `request` (raw bytes) and returns what it sent
 * back and how the connection ended. A server that refuses before reading
 * the whole request may reset the connection: that is an ending too. Any
 * other error (refused connection, no answer in 5 s) fails the test.
 */
async function ask(port: number, request: Uint8Array): Promise<Answer> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const parts: Uint8Array[] = [];
  const exchange = async (): Promise<Answer> => {
    try {
      await writeAll(conn, request);
      await conn.closeWrite();
    } catch (err) {
      if (!isClosedUnderUs(err)) throw err;
    }
    const buffer = new Uint8Array(64 * 1024);
    while (true) {
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch (err) {
        if (!isClosedUnderUs(err)) throw err;
        return { bytes: concat(parts), ending: "reset" };
      }
      if (n === null) return { bytes: concat(parts), ending: "closed" };
      parts.push(buffer.slice(0, n));
    }
  };
  try {
    return await withTimeout(exchange(), 5000, `the answer to ${preview(request)}`);
  } finally {
    conn.close();
  }
}

/** Asks for `request` and checks the server closed the connection without sending a byte. */
async function assertRefused(port: number, request: Uint8Array): Promise<void> {
  const answer = await ask(port, request);
  assert.equal(
    answer.bytes.length,
    0,
    `${preview(request)} got ${answer.bytes.length} bytes back instead of a closed connection`,
  );
}

/** Asks for `request` and checks the server sent exactly `expected`, then closed. */
async function assertServed(port: number, request: Uint8Array, expected: Uint8Array) {
  assert.deepEqual(await ask(port, request), { bytes: expected, ending: "closed" });
}

for (const mode of MODES) {
  Deno.test(`the peer's file server in ${mode} mode sends shared files and refuses every unsafe name`, async () => {
    await using outside = await tempFolder();
    await using share = await tempFolder();
    const secret = encoder.encode("secret outside the folder\n");
    await putFile(outside.path, "secret.txt", secret, T0);
    const ok = randomBytes(300 * 1024, 11);
    await putFile(share.path, "ok.bin", ok, T0);
    await putFile(share.path, "peer.py", encoder.encode("print(1)\n"), T0);
    await putFile(share.path, ".hidden", encoder.encode("hidden\n"), T0);
    await Deno.mkdir(`${share.path}/sub`);
    await putFile(`${share.path}/sub`, "inner.txt", encoder.encode("inner\n"), T0);
    await Deno.symlink(`${outside.path}/secret.txt`, `${share.path}/out.txt`);
    await Deno.symlink(`${share.path}/.hidden`, `${share.path}/to_hidden.txt`);
    await Deno.symlink(`${share.path}/ok.bin`, `${share.path}/alias.bin`);
    const tracker = fakeTracker(() => ({}));
    const lines: string[] = [];
    try {
      await using peer = await startPeer({
        dir: share.path,
        tracker: { hostname: "127.0.0.1", port: tracker.port },
        mode,
        poolSize: 1,
        interval: 0.2,
        requestTimeoutSeconds: 0.5,
        log: (line) => lines.push(line),
      });
      const port = peer.addr.port;
      // A client that connects and says nothing is closed after the request timeout.
      const idle = await Deno.connect({ hostname: "127.0.0.1", port });
      const idleEnded = readAll(idle).catch(() => new Uint8Array(0)).finally(() => idle.close());
      await assertServed(port, encoder.encode("ok.bin\n"), holderReply(ok));
      // A symlink to a shared file in the same folder is that file.
      await assertServed(port, encoder.encode("alias.bin\r\n"), holderReply(ok));
      // A file in a subfolder, by its relative path (extension "paths").
      await assertServed(
        port,
        encoder.encode("sub/inner.txt\n"),
        holderReply(encoder.encode("inner\n")),
      );
      const refused = [
        "../" + outside.path.split("/").pop() + "/secret.txt",
        `${outside.path}/secret.txt`,
        "sub/../ok.bin",
        "sub\\inner.txt",
        "sub",
        "..",
        ".",
        "",
        "peer.py",
        ".hidden",
        "out.txt",
        "to_hidden.txt",
        "missing.txt",
        "nul\u0000.txt",
        "x".repeat(300),
      ].map((name) => encoder.encode(name + "\n"));
      refused.push(Uint8Array.of(0xff, 0xfe, 0x0a)); // not UTF-8
      refused.push(new Uint8Array(64 * 1024).fill(0x61)); // 64 KiB, no newline
      for (const request of refused) await assertRefused(port, request);
      // Still serving after all that.
      await assertServed(port, encoder.encode("ok.bin\n"), holderReply(ok));
      await waitUntil(
        () => lines.filter((l) => l.startsWith("refused ")).length >= refused.length + 1,
        5000,
        "a log line per refusal",
        () => lines.join("\n"),
      );
      assert.ok(lines.some((l) => /out\.txt.*symlink leads out of the shared folder/.test(l)));
      assert.ok(lines.some((l) => /secret\.txt.*"\.\." is not allowed in a path/.test(l)));
      assert.ok(lines.some((l) => /request longer than/.test(l)));
      assert.deepEqual(await idleEnded, new Uint8Array(0));
      assert.ok(lines.some((l) => /no request within 0\.5 s/.test(l)), lines.join("\n"));
    } finally {
      await tracker.close();
    }
  });
}

for (const mode of MODES) {
  Deno.test(`the peer's file server in ${mode} mode closes a client that stops reading`, async () => {
    await using share = await tempFolder();
    // Far more than the socket buffers hold, so the server's writes stall.
    const big = randomBytes(16 * MIB, 5);
    await putFile(share.path, "big.bin", big, T0);
    const small = encoder.encode("small\n");
    await putFile(share.path, "small.txt", small, T0);
    const tracker = fakeTracker(() => ({}));
    const lines: string[] = [];
    try {
      await using peer = await startPeer({
        dir: share.path,
        tracker: { hostname: "127.0.0.1", port: tracker.port },
        mode,
        poolSize: 1,
        sendTimeoutSeconds: 0.5,
        log: (line) => lines.push(line),
      });
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: peer.addr.port });
      try {
        await writeAll(conn, encoder.encode("big.bin\n"));
        // Read nothing: once the buffers are full, no write completes for 0.5 s.
        await waitUntil(
          () => lines.some((l) => /^closed 127\.0\.0\.1:\d+: it read nothing for 0\.5 s/.test(l)),
          10_000,
          "the send timeout's log line",
          () => lines.join("\n"),
        );
        const answer = await withTimeout(readAll(conn), 5000, "the rest of the answer");
        assert.ok(answer.length < big.length, `got all ${answer.length} bytes`);
      } finally {
        conn.close();
      }
      // The server goes on serving others.
      await assertServed(peer.addr.port, encoder.encode("small.txt\n"), holderReply(small));
    } finally {
      await tracker.close();
    }
  });
}

Deno.test("a peer skips hostile names and impossible mtimes in a directory and never writes outside its folder", async () => {
  await using parent = await tempFolder();
  const dir = `${parent.path}/share`;
  await Deno.mkdir(dir);
  const content = encoder.encode("written by a hostile holder\n");
  const holder = fakeHolder((_name, conn) => writeAll(conn, holderReply(content)));
  const hostile = [
    "../escape.txt",
    `${parent.path}/absolute.txt`,
    "sub/x.txt",
    "..\\windows.txt",
    "..",
    ".",
    "",
    ".bashrc",
    "evil.py",
    "lib.so",
    "ctl\u0001.txt",
    "y".repeat(256),
  ];
  const entry = { ip: "127.0.0.1", port: holder.port, mtime: T0 };
  const directory: Directory = Object.fromEntries(
    [...hostile, "good.txt"].map((name) => [name, entry]),
  );
  // As the course's tracker passes it on: no file system stores it, no date can show it.
  directory["future.txt"] = { ...entry, mtime: 1e15 };
  const tracker = fakeTracker(() => directory);
  const lines: string[] = [];
  try {
    await using _peer = await startPeer({
      dir,
      tracker: { hostname: "127.0.0.1", port: tracker.port },
      interval: 0.1,
      log: (line) => lines.push(line),
    });
    await waitUntil(() => namesIn(dir).includes("good.txt"), 5000, "good.txt");
    // A few more rounds, in which nothing else may happen.
    await waitUntil(() => tracker.messages.flat().length >= 6, 5000, "more rounds");
  } finally {
    await tracker.close();
    await holder.close();
  }
  assert.deepEqual(namesIn(parent.path), ["share"]);
  assert.deepEqual(namesIn(dir), ["good.txt"]);
  assert.deepEqual(holder.requests, ["good.txt"]);
  // The course's *.py and *.so are ignore rules now: said as such.
  const ignored = ["evil.py", "lib.so"];
  for (const name of hostile) {
    const shown = preview(encoder.encode(name)).slice(0, 40);
    assert.ok(
      lines.some((l) =>
        ignored.includes(name)
          ? l.includes(`ignoring ${name} (default rule`)
          : l.includes(`skipping ${shown}`)
      ),
      `no skip line for ${shown}:\n${lines.join("\n")}`,
    );
  }
  assert.ok(
    lines.some((l) => /skipping "future\.txt": mtime 1000000000000000 is past 4294967295/.test(l)),
    lines.join("\n"),
  );
  // Each skipped entry is reported once, not every round.
  assert.equal(
    lines.filter((l) => l.includes("skipping") || l.includes("ignoring")).length,
    hostile.length + 1,
  );
});

Deno.test("bad transfers are discarded (short, wrong bytes, bad or absurd Content-Length, size mismatch, stalled) and the next holder is used", async () => {
  await using share = await tempFolder();
  const files = new Map<string, Uint8Array>();
  const bad = new Map<string, (conn: Deno.Conn, body: Uint8Array) => Promise<void>>([
    ["short", async (conn, body) => {
      await writeAll(conn, encoder.encode(`Content-Length: ${body.length}\n`));
      await writeAll(conn, body.subarray(0, body.length >> 1));
    }],
    ["wrong", async (conn, body) => {
      const other = body.slice();
      other[other.length - 1] ^= 0xff;
      await writeAll(conn, holderReply(other));
    }],
    ["huge", (conn) => writeAll(conn, encoder.encode(`Content-Length: ${2 ** 50}\n`))],
    ["digits", (conn) => writeAll(conn, encoder.encode("Content-Length: 99999999999999999999\n"))],
    ["negative", (conn) => writeAll(conn, encoder.encode("Content-Length: -5\nhello"))],
    ["word", (conn) => writeAll(conn, encoder.encode("Content-Length: lots\n"))],
    ["mismatch", async (conn, body) => {
      await writeAll(conn, encoder.encode(`Content-Length: ${body.length + 1}\n`));
      await writeAll(conn, body);
    }],
    ["endless", (conn) => writeAll(conn, new Uint8Array(64 * 1024).fill(0x43))],
    ["silent", () => new Promise((resolve) => setTimeout(resolve, 1500))],
    ["nothing", () => Promise.resolve()],
  ]);
  const expected: Record<string, RegExp> = {
    short: /short transfer.*got \d+ of \d+ bytes/,
    wrong: /wrong bytes.*SHA-256/,
    huge: /offers \d+ bytes, more than/,
    digits: /bad header/,
    negative: /bad header/,
    word: /bad header/,
    mismatch: /offers \d+ bytes but the directory says/,
    endless: /header longer than/,
    silent: /sent nothing for/,
    nothing: /without a Content-Length/,
  };
  const good = fakeHolder(files);
  const holders = new Map(
    [...bad].map(([kind, respond]) => [
      kind,
      fakeHolder((name, conn) => respond(conn, files.get(name)!)),
    ]),
  );
  const directory: Directory = {};
  for (const [i, kind] of [...bad.keys()].entries()) {
    const body = randomBytes(200 * 1024 + i * 777, 100 + i);
    files.set(`${kind}.bin`, body);
    const port = holders.get(kind)!.port;
    directory[`${kind}.bin`] = {
      ip: "127.0.0.1",
      port,
      mtime: T0 + i,
      size: body.length,
      sha256: sha256(body),
      holders: [
        { ip: "127.0.0.1", port, mtime: T0 + i },
        { ip: "127.0.0.1", port: good.port, mtime: T0 + i },
      ],
    };
  }
  const tracker = fakeTracker(() => directory);
  const lines: string[] = [];
  try {
    await using _peer = await startPeer({
      dir: share.path,
      tracker: { hostname: "127.0.0.1", port: tracker.port },
      interval: 0.2,
      idleTimeoutSeconds: 0.5,
      log: (line) => lines.push(line),
    });
    await waitUntil(
      () =>
        namesIn(share.path).length === bad.size &&
        !namesIn(share.path).some((n) => n.startsWith(".")),
      10_000,
      "every file from the good holder",
      () => lines.join("\n"),
    );
  } finally {
    await tracker.close();
    await good.close();
    for (const holder of holders.values()) await holder.close();
  }
  const state = await folderState(share.path);
  for (const [i, [name, body]] of [...files].entries()) {
    assert.deepEqual(state[name], { size: body.length, mtime: T0 + i, sha256: sha256(body) });
  }
  for (const [kind, pattern] of Object.entries(expected)) {
    const port = holders.get(kind)!.port;
    const failure = lines.find((l) =>
      l.startsWith(`download of ${kind}.bin from 127.0.0.1:${port} failed`)
    );
    assert.ok(failure, `no failure line for ${kind}:\n${lines.join("\n")}`);
    assert.match(failure, pattern);
    assert.match(failure, new RegExp(`trying 127\\.0\\.0\\.1:${good.port}`));
    assert.deepEqual(holders.get(kind)!.requests, [`${kind}.bin`], lines.join("\n"));
  }
});

Deno.test("a download never overwrites a file edited here while it travelled", async () => {
  await using share = await tempFolder();
  const path = `${share.path}/doc.txt`;
  await putFile(share.path, "doc.txt", encoder.encode("old version\n"), T0);
  const theirs = randomBytes(64 * 1024, 9);
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let halfway!: () => void;
  const halfSent = new Promise<void>((resolve) => halfway = resolve);
  const holder = fakeHolder(async (_name, conn) => {
    await writeAll(conn, encoder.encode(`Content-Length: ${theirs.length}\n`));
    await writeAll(conn, theirs.subarray(0, 1000));
    halfway();
    await released;
    await writeAll(conn, theirs.subarray(1000));
  });
  const directory: Directory = {
    "doc.txt": {
      ip: "127.0.0.1",
      port: holder.port,
      mtime: T0 + 10,
      size: theirs.length,
      sha256: sha256(theirs),
    },
  };
  const tracker = fakeTracker(() => directory);
  const lines: string[] = [];
  const edit = encoder.encode("edited here while the download was under way\n");
  try {
    await using peer = await startPeer({
      dir: share.path,
      tracker: { hostname: "127.0.0.1", port: tracker.port },
      interval: 0.2,
      log: (line) => lines.push(line),
    });
    await withTimeout(halfSent, 5000, "the start of the download");
    // The user saves the file (mtime: now) while the bytes travel.
    await Deno.writeFile(path, edit);
    release();
    await waitUntil(
      () => lines.some((l) => /^download of doc\.txt from \S+ dropped: doc\.txt changed/.test(l)),
      5000,
      "the dropped download's log line",
      () => lines.join("\n"),
    );
    // More rounds: the edit is newer than the directory's version, so it stays.
    const seen = tracker.messages.flat().length;
    await waitUntil(() => tracker.messages.flat().length >= seen + 3, 5000, "three more rounds");
    assert.equal(peer.stats.downloads, 0);
    assert.equal(peer.stats.failures, 0, "a local edit is not the holder's failure");
  } finally {
    await tracker.close();
    await holder.close();
  }
  assert.deepEqual(await Deno.readFile(path), edit);
  assert.deepEqual(namesIn(share.path), ["doc.txt"], "the temp file is gone");
  assert.deepEqual(holder.requests, ["doc.txt"]);
});

Deno.test("downloadFile() keeps a file that appeared or changed here since the download was planned", async () => {
  await using share = await tempFolder();
  const theirs = encoder.encode("the holder's version\n");
  const holder = fakeHolder((_name, conn) => writeAll(conn, holderReply(theirs)));
  try {
    const fetch = (name: string, localMtime: number | null) =>
      downloadFile({
        dir: share.path,
        name,
        hostname: "127.0.0.1",
        port: holder.port,
        mtime: T0 + 10,
        localMtime,
      });
    // Planned when the file was at T0; someone put back an older copy since.
    await putFile(share.path, "changed.txt", encoder.encode("restored\n"), T0 + 5);
    await assert.rejects(fetch("changed.txt", T0), LocalChangeError);
    // Planned when there was no file; one was written since.
    await putFile(share.path, "appeared.txt", encoder.encode("new here\n"), T0 + 1);
    await assert.rejects(fetch("appeared.txt", null), /appeared here meanwhile/);
    // Unchanged since planning and older: replaced.
    await putFile(share.path, "older.txt", encoder.encode("old\n"), T0);
    await fetch("older.txt", T0);
  } finally {
    await holder.close();
  }
  const state = await folderState(share.path);
  assert.deepEqual(Object.keys(state).sort(), ["appeared.txt", "changed.txt", "older.txt"]);
  assert.equal(state["changed.txt"]?.mtime, T0 + 5);
  assert.equal(state["appeared.txt"]?.mtime, T0 + 1);
  assert.deepEqual(state["older.txt"], {
    size: theirs.length,
    mtime: T0 + 10,
    sha256: sha256(theirs),
  });
});

Deno.test("Init lists the shared files with size and SHA-256; a KeepAlive carries the list again only when it changed; a dropped tracker gets a new Init", async () => {
  await using share = await tempFolder();
  const a = encoder.encode("alpha\n");
  await putFile(share.path, "a.txt", a, T0);
  await putFile(share.path, "skip.py", encoder.encode("x\n"), T0);
  await putFile(share.path, ".dot", encoder.encode("x\n"), T0);
  await Deno.mkdir(`${share.path}/folder`);
  let garbage = false;
  const tracker = fakeTracker(() => (garbage ? "this is not JSON" : {}));
  const lines: string[] = [];
  try {
    await using peer = await startPeer({
      dir: share.path,
      tracker: { hostname: "127.0.0.1", port: tracker.port },
      interval: 0.1,
      log: (line) => lines.push(line),
    });
    await waitUntil(() => (tracker.messages[0]?.length ?? 0) >= 3, 5000, "three messages");
    const [init, keepAlive] = tracker.messages[0];
    // The course's fields first, then ours (id, features, deletions: the course ignores them).
    const id = init.id as string;
    assert.match(id, /^[A-Z2-7]{7}$/);
    assert.deepEqual(init, {
      port: peer.addr.port,
      files: [{ name: "a.txt", mtime: T0, size: a.length, sha256: sha256(a), by: id }],
      id,
      // Every extension this peer knows (the list grows with the protocol: p2p/protocol.ts).
      features: [...FEATURES],
      deleted: [],
    });
    assert.deepEqual(keepAlive, { port: peer.addr.port });
    // A new file: the next KeepAlive has the whole list, the ones after it none.
    const b = randomBytes(2 * MIB, 3);
    await putFile(share.path, "b.bin", b, T0 + 1);
    const withList = (m: Record<string, unknown>) => Array.isArray(m.files) && m.files.length === 2;
    await waitUntil(() => tracker.messages[0].some(withList), 5000, "the changed list");
    const at = tracker.messages[0].findIndex(withList);
    assert.deepEqual(tracker.messages[0][at].files, [
      { name: "a.txt", mtime: T0, size: a.length, sha256: sha256(a), by: id },
      { name: "b.bin", mtime: T0 + 1, size: b.length, sha256: sha256(b), by: id },
    ]);
    await waitUntil(() => tracker.messages[0].length >= at + 3, 5000, "two more messages");
    assert.deepEqual(tracker.messages[0].slice(at + 1, at + 3), [
      { port: peer.addr.port },
      { port: peer.addr.port },
    ]);
    // The tracker hangs up: the peer reconnects and starts over with Init.
    tracker.dropAll();
    await waitUntil(() => (tracker.messages[1]?.length ?? 0) >= 1, 5000, "a new connection");
    assert.equal((tracker.messages[1][0].files as unknown[]).length, 2);
    // A tracker that answers garbage is dropped too, with a log line.
    garbage = true;
    await waitUntil(() => tracker.messages.length >= 3, 5000, "a reconnection after garbage");
    assert.ok(lines.some((l) => /invalid JSON.*reconnecting in/.test(l)), lines.join("\n"));
  } finally {
    await tracker.close();
  }
});

Deno.test("three peer.ts in worker mode started at once without --port each bind a port of their own from 8000 up", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  await using c = await tempFolder();
  const tracker = fakeTracker(() => ({}));
  // Worker mode starts its pool before it listens: a port chosen early would be long gone.
  // On 127.0.0.1, a port taken by anything else on this machine is simply skipped.
  const started = await Promise.allSettled([a, b, c].map((folder) =>
    startScript(
      "p2p/peer.ts",
      [
        ...["127.0.0.1", String(tracker.port), "--dir", folder.path, "--host", "127.0.0.1"],
        ...["--mode", "worker", "--workers", "1"],
      ],
      {
        permissions: [
          "--allow-net",
          `--allow-read=.,${folder.path}`,
          `--allow-write=${folder.path}`,
        ],
      },
    )
  ));
  const peers = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  try {
    for (const s of started) if (s.status === "rejected") throw s.reason;
    const ports = peers.map((p) => p.port);
    assert.equal(new Set(ports).size, 3, `ports ${ports.join(", ")}`);
    for (const port of ports) assert.ok(port >= 8000 && port < 9000, `port ${port}`);
    // Each is really the one serving on its port: it answers with its own refusal log line.
    for (const [i, peer] of peers.entries()) {
      await assertRefused(ports[i], encoder.encode(`missing-${i}.txt\n`));
      await peer.waitFor(new RegExp(`missing-${i}\\.txt.*no such file`), 5000);
    }
  } finally {
    for (const peer of peers) assert.equal((await peer.stop()).code, 0, peer.lines.join("\n"));
    await tracker.close();
  }
});

Deno.test("peer.ts answers a bad command line with one line and the usage (exit 2), a missing folder or permission with one line (exit 1)", async () => {
  const all = ["--allow-net", "--allow-read", "--allow-write"];
  for (
    const args of [
      [],
      ["--dir"],
      ["--dir", "share", "--interval", "0"],
      ["--dir", "share", "--mode", "threads"],
      ["--dir", "share", "--port", "70000"],
      ["--dir", "share", "10.0.0.1"],
      ["--dir", "share", "10.0.0.1", "0"],
      ["--dir", "share", "10.0.0.1", "9000", "--tracker", "10.0.0.1:9000"],
      ["--dir", "share", "--tracker", "nowhere"],
    ]
  ) {
    const run = await runScript("p2p/peer.ts", args, { permissions: all });
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    assert.match(run.stderr, /^error: [^\n]+\nusage: /);
  }
  const missing = await runScript("p2p/peer.ts", ["--dir", "/nonexistent/share"], {
    permissions: all,
  });
  assert.equal(missing.code, 1);
  assert.equal(missing.stderr, "error: --dir /nonexistent/share: no such folder\n");
  await using share = await tempFolder();
  const denied = await runScript("p2p/peer.ts", ["--dir", share.path], {
    permissions: ["--allow-net"],
  });
  assert.equal(denied.code, 1);
  assert.match(
    denied.stderr,
    /^error: no permission to read .* run with --allow-read=\S+ --allow-write=\S+\n$/,
  );
  // Failing to bind for any reason but "in use" is said as it is, not as "no free port".
  const notHere = await runScript("p2p/peer.ts", ["--dir", share.path, "--host", "1.2.3.4"], {
    permissions: all,
  });
  assert.equal(notHere.code, 1);
  assert.equal(
    notHere.stderr,
    "error: cannot listen on 1.2.3.4:8000: this machine has no such address\n",
  );
  const noNet = await runScript("p2p/peer.ts", ["--dir", share.path], {
    permissions: ["--allow-read", "--allow-write"],
  });
  assert.equal(noNet.code, 1);
  assert.match(
    noNet.stderr,
    /^error: no permission to listen on \S+:8000: run with --allow-net\n$/,
  );
});
