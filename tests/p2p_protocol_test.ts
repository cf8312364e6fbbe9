/**
 * Unit tests of the P2P protocol module and the line reader: the encoder
 * matches Python's `json.dumps` byte for byte, the parsers refuse every
 * wrong type with a reason, names are checked, and a line reader's memory
 * stays bounded whatever arrives.
 */

import assert from "node:assert/strict";
import { LineReader, LineTooLongError } from "../lib/lines.ts";
import { READ_BUFFER_BYTES, type Reader } from "../lib/net.ts";
import {
  encodeJson,
  encodeLine,
  isSafeFileName,
  MAX_MTIME_SECONDS,
  parseDirectory,
  parsePeerMessage,
  ProtocolError,
} from "../p2p/protocol.ts";
import { haveCommand } from "./helpers.ts";

const encoder = new TextEncoder();

/** A source that hands out the given chunks, one per read(), then ends. */
function chunks(...parts: (string | Uint8Array)[]): Reader & { reads: number } {
  const queue = parts.map((p) => typeof p === "string" ? encoder.encode(p) : p);
  return {
    reads: 0,
    read(p: Uint8Array): Promise<number | null> {
      this.reads++;
      const next = queue.shift();
      if (next === undefined) return Promise.resolve(null);
      const n = Math.min(p.length, next.length);
      p.set(next.subarray(0, n));
      if (n < next.length) queue.unshift(next.subarray(n));
      return Promise.resolve(n);
    },
  };
}

Deno.test("LineReader splits lines across reads and drops a trailing \\r", async () => {
  const lines = new LineReader(chunks("ab", "c\r\nde\nf", "g\n", "tail"), 100);
  assert.equal(await lines.readLine(), "abc");
  assert.equal(await lines.readLine(), "de");
  assert.equal(await lines.readLine(), "fg");
  assert.equal(await lines.readLine(), "tail", "the unterminated rest comes last");
  assert.equal(await lines.readLine(), null);
  assert.equal(await lines.readLine(), null);
});

Deno.test("LineReader decodes UTF-8 split between reads and refuses invalid UTF-8", async () => {
  const euro = encoder.encode("€\n"); // three bytes, then the newline
  const lines = new LineReader(chunks(euro.subarray(0, 1), euro.subarray(1)), 100);
  assert.equal(await lines.readLine(), "€");
  const bad = new LineReader(chunks(new Uint8Array([0x66, 0xff, 0x0a])), 100);
  await assert.rejects(bad.readLine(), TypeError);
});

Deno.test("LineReader.takeBuffered() returns the bytes after the last line", async () => {
  const lines = new LineReader(chunks("Content-Length: 5\nhel", "lo"), 100);
  assert.equal(await lines.readLine(), "Content-Length: 5");
  assert.equal(new TextDecoder().decode(lines.takeBuffered()), "hel");
  assert.equal(lines.bufferedBytes, 0);
});

Deno.test("LineReader accepts a line of exactly the limit and refuses one byte more", async () => {
  const ok = new LineReader(chunks("x".repeat(10) + "\r\n", "y".repeat(10) + "\n"), 10);
  assert.equal(await ok.readLine(), "x".repeat(10));
  assert.equal(await ok.readLine(), "y".repeat(10));
  const long = new LineReader(chunks("z".repeat(11) + "\n"), 10);
  await assert.rejects(long.readLine(), LineTooLongError);
  const unterminated = new LineReader(chunks("z".repeat(11)), 10);
  await assert.rejects(unterminated.readLine(), LineTooLongError);
});

Deno.test("LineReader gives up on an endless line after reading about the limit", async () => {
  let given = 0;
  const endless: Reader = {
    read(p) {
      p.fill(0x61);
      given += p.length;
      return Promise.resolve(p.length);
    },
  };
  const limit = 256 * 1024;
  const lines = new LineReader(endless, limit);
  await assert.rejects(lines.readLine(), LineTooLongError);
  assert.ok(given > limit, "it read up to the limit");
  assert.ok(given <= limit + 1 + READ_BUFFER_BYTES, `it stopped early, after ${given} bytes`);
});

Deno.test("encodeJson() writes what Python's json.dumps() writes", {
  ignore: !haveCommand("python3"),
}, async () => {
  const samples: unknown[] = [
    { port: 8001, files: [{ name: "a.txt", mtime: 1700000000 }] },
    { port: 8001 },
    {},
    [],
    { 'é ü \u{1F600} \u007f \u0001 " \\ \n \t /': { ip: "10.0.0.2", port: 1, mtime: 1.5 } },
    { nested: [[], {}, [1, 2.25, -3], null, true, false, ""] },
  ];
  const script = "import json, sys\n" +
    "for line in sys.stdin: print(json.dumps(json.loads(line)))\n";
  const child = new Deno.Command("python3", {
    args: ["-c", script],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(encoder.encode(samples.map((s) => JSON.stringify(s)).join("\n") + "\n"));
  await writer.close();
  const out = await child.output();
  assert.ok(out.success);
  const pythonLines = new TextDecoder().decode(out.stdout).split("\n").slice(0, -1);
  assert.deepEqual(samples.map(encodeJson), pythonLines);
});

Deno.test("encodeLine() ends each message with one newline", () => {
  assert.equal(new TextDecoder().decode(encodeLine({ port: 8001 })), '{"port": 8001}\n');
  assert.throws(() => encodeJson({ x: NaN }), TypeError);
});

Deno.test("parsePeerMessage() reads Init and KeepAlive and ignores unknown fields", () => {
  assert.deepEqual(
    parsePeerMessage(
      '{"port": 8001, "files": [{"name": "a.txt", "mtime": 1700000000.5, "size": 3, ' +
        `"sha256": "${"ab".repeat(32)}", "color": "red"}], "crt": "x"}`,
    ),
    {
      port: 8001,
      files: [{ name: "a.txt", mtime: 1700000000.5, size: 3, sha256: "ab".repeat(32) }],
    },
  );
  assert.deepEqual(parsePeerMessage('{"port": 65535}'), { port: 65535 });
  assert.deepEqual(parsePeerMessage('{"port": 1, "files": []}'), { port: 1, files: [] });
});

Deno.test("parsePeerMessage() refuses wrong types and shapes with a reason", () => {
  const cases: [string, RegExp][] = [
    ["not json", /invalid JSON/],
    ["", /invalid JSON/],
    ["[1, 2]", /must be a JSON object, got an array/],
    ["null", /must be a JSON object, got null/],
    ['"port"', /must be a JSON object, got string/],
    ["{}", /no "port"/],
    ['{"serverip": "1.2.3.4", "serverport": 8001}', /TLS key query/],
    ['{"port": "8001"}', /port must be a whole number/],
    ['{"port": 0}', /port must be/],
    ['{"port": 65536}', /port must be/],
    ['{"port": 80.5}', /port must be/],
    ['{"port": true}', /port must be/],
    ['{"port": 1, "files": {}}', /files must be an array/],
    ['{"port": 1, "files": ["a.txt"]}', /files\[0\] must be an object/],
    ['{"port": 1, "files": [{"mtime": 1}]}', /files\[0\]\.name must be a string/],
    ['{"port": 1, "files": [{"name": 7, "mtime": 1}]}', /name must be a string/],
    ['{"port": 1, "files": [{"name": "a"}]}', /mtime must be a number/],
    ['{"port": 1, "files": [{"name": "a", "mtime": "1"}]}', /mtime must be a number/],
    ['{"port": 1, "files": [{"name": "a", "mtime": -1}]}', /mtime must be a number/],
    // Past 2106: no real file, and 1e15 s is beyond any date JavaScript can show.
    ['{"port": 1, "files": [{"name": "a", "mtime": 4294967296}]}', /from 0 to 4294967295/],
    ['{"port": 1, "files": [{"name": "a", "mtime": 1e15}]}', /from 0 to 4294967295/],
    ['{"port": 1, "files": [{"name": "a", "mtime": 1, "size": -1}]}', /size must be/],
    ['{"port": 1, "files": [{"name": "a", "mtime": 1, "size": 1.5}]}', /size must be/],
    ['{"port": 1, "files": [{"name": "a", "mtime": 1, "sha256": "AB"}]}', /sha256 must be/],
  ];
  for (const [line, reason] of cases) {
    assert.throws(() => parsePeerMessage(line), (err: unknown) => {
      assert.ok(err instanceof ProtocolError, `${line}: ${err}`);
      assert.match(err.message, reason, line);
      return true;
    });
  }
});

Deno.test("parseDirectory() reads entries with our extensions and keeps any name", () => {
  const holders = [{ ip: "10.0.0.2", port: 8001, mtime: 5 }, { ip: "::1", port: 8002, mtime: 5 }];
  const first = { ip: "10.0.0.2", port: 8001, mtime: 5, size: 0, sha256: "0".repeat(64), holders };
  // Written out by hand: "__proto__" in an object literal would set the prototype instead.
  const directory = parseDirectory(
    `{"a.txt": ${encodeJson(first)}, "__proto__": {"ip": "10.0.0.3", "port": 8003, "mtime": 1}, ` +
      `"../x": {"ip": "10.0.0.4", "port": 8004, "mtime": 2, "extra": [1]}}`,
  );
  assert.deepEqual(Object.keys(directory), ["a.txt", "__proto__", "../x"]);
  assert.deepEqual(directory["a.txt"].holders, holders);
  assert.equal(directory["__proto__"].port, 8003);
  assert.equal(Object.getPrototypeOf(directory), Object.prototype);
  assert.deepEqual(directory["../x"], { ip: "10.0.0.4", port: 8004, mtime: 2 });
  assert.deepEqual(parseDirectory("{}"), {});
  // A peer may announce at most MAX_MTIME_SECONDS; a directory keeps any mtime for the peer to judge.
  assert.equal(
    parsePeerMessage(`{"port": 1, "files": [{"name": "a", "mtime": ${MAX_MTIME_SECONDS}}]}`)
      .files![0].mtime,
    MAX_MTIME_SECONDS,
  );
  assert.equal(parseDirectory('{"a": {"ip": "h", "port": 1, "mtime": 1e15}}').a.mtime, 1e15);
});

Deno.test("parseDirectory() refuses wrong types with a reason", () => {
  const cases: [string, RegExp][] = [
    ["[]", /directory must be a JSON object/],
    ['{"a": 1}', /entry "a" must be an object/],
    ['{"a": {"port": 1, "mtime": 1}}', /entry "a"\.ip must be/],
    ['{"a": {"ip": "", "port": 1, "mtime": 1}}', /\.ip must be/],
    ['{"a": {"ip": "h", "port": "1", "mtime": 1}}', /\.port must be/],
    ['{"a": {"ip": "h", "port": 1, "mtime": null}}', /\.mtime must be/],
    ['{"a": {"ip": "h", "port": 1, "mtime": 1, "holders": {}}}', /holders must be an array/],
    ['{"a": {"ip": "h", "port": 1, "mtime": 1, "holders": [{"ip": "h"}]}}', /holders\[0\]\.port/],
  ];
  for (const [line, reason] of cases) {
    assert.throws(() => parseDirectory(line), (err: unknown) => {
      assert.ok(err instanceof ProtocolError, `${line}: ${err}`);
      assert.match(err.message, reason, line);
      return true;
    });
  }
});

Deno.test("isSafeFileName() allows plain names only", () => {
  for (
    const name of ["a.txt", "notes", ".hidden", "..a", "a..b", "ünï cødé €.txt", "x".repeat(255)]
  ) {
    assert.equal(isSafeFileName(name), true, name);
  }
  const bad = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "/etc/passwd",
    "..\\x",
    "a\\b",
    "C:\\x",
    "a\u0000b",
    "a\nb",
    "a\u007f",
    "a\u0085",
    "x".repeat(256),
    "é".repeat(128), // 256 bytes of UTF-8
    "\ud800", // half a surrogate pair
  ];
  for (const name of bad) assert.equal(isSafeFileName(name), false, JSON.stringify(name));
});
