/**
 * `proxy_server.ts --forward` with real clients: curl (two origins in one
 * run over one kept-alive connection, in every mode; HTTPS through
 * `CONNECT` to a TLS origin with a throwaway certificate), Python's urllib,
 * headless Chromium with a screenshot, and the lab's `proxy_client.ts
 * --forward`. Then bad input, each case on raw sockets: no host, a bad
 * port, a 100 KiB header line, `--allow` refusals, a stalled half request,
 * a target that dies mid-reply, refused/unknown/silent targets, a loop
 * through a relay, and an open proxy on a public address.
 */

import assert from "node:assert/strict";
import { MODE_PERMISSIONS, MODES } from "../lib/concurrency.ts";
import {
  copyBody,
  HttpReader,
  parseResponseHead,
  responseFraming,
  type ResponseHead,
} from "../lib/http1.ts";
import { isAllowed, parseAllowPattern } from "../lib/forward.ts";
import { concatBytes, listenOn, writeAll } from "../lib/net.ts";
import { startOrigin } from "../lib/origin.ts";
import { startProxyServer } from "../proxy_server.ts";
import {
  haveCommand,
  projectPath,
  randomBytes,
  readAll,
  runScript,
  sha256,
  startRawOrigin,
  startScript,
  waitUntil,
  withTimeout,
} from "./helpers.ts";
import { tempFolder } from "./p2p_helpers.ts";
import { runChromium, whyNoChromium } from "./browser.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Runs a command to its end; stdout and stderr as text. */
async function run(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string; bytes: Uint8Array }> {
  const out = await new Deno.Command(command, {
    args,
    env,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    bytes: out.stdout,
  };
}

/** One response read off a kept connection: head, body, and the bytes as they came. */
async function readResponse(
  reader: HttpReader,
  method = "GET",
): Promise<{ head: ResponseHead; body: string }> {
  const lines = await reader.readHead();
  assert.ok(lines, "the connection ended before a response");
  const head = parseResponseHead(lines);
  const parts: Uint8Array[] = [];
  await copyBody(
    reader,
    {
      write: (p) => {
        parts.push(p.slice());
        return Promise.resolve(p.length);
      },
    },
    responseFraming(method, head),
    "dechunk",
  );
  return { head, body: decoder.decode(concatBytes(parts)) };
}

/** Sends `request` on a new connection and reads everything until the proxy closes. */
async function rawRequest(port: number, request: string | Uint8Array): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, typeof request === "string" ? encoder.encode(request) : request);
    return decoder.decode(await withTimeout(readAll(conn), 10_000, "the proxy's answer"));
  } finally {
    conn.close();
  }
}

/** The status line and body of a whole answer read by {@linkcode rawRequest}. */
function split(answer: string): { status: string; body: string } {
  const end = answer.indexOf("\r\n\r\n");
  assert.ok(end > 0, `no HTTP head in ${JSON.stringify(answer.slice(0, 80))}`);
  return { status: answer.slice(0, answer.indexOf("\r\n")), body: answer.slice(end + 4) };
}

/** A forward proxy in-process, its log lines collected. */
async function forwardProxy(
  options: Parameters<typeof startProxyServer>[0] = {},
) {
  const lines: string[] = [];
  const server = await startProxyServer({
    forward: true,
    poolSize: 1,
    log: (line) => lines.push(line),
    ...options,
  });
  return { server, lines, url: `http://127.0.0.1:${server.addr.port}` };
}

/** The client address:port at the start of each request's log line. */
function clientsIn(lines: string[]): Set<string> {
  return new Set(lines.map((l) => /^(\S+) /.exec(l)?.[1] ?? l));
}

// ---------------------------------------------------------------------------
// Real clients.

for (const mode of MODES) {
  Deno.test(
    {
      name:
        `curl -x through startProxyServer({ forward }) in ${mode} mode: two origins, one kept connection`,
      ignore: !haveCommand("curl"),
    },
    async () => {
      const big = randomBytes(300_000, 5);
      await using a = await startOrigin({ pages: { "/a": "<p>from A</p>", "/big": big } });
      await using b = await startOrigin({ pages: { "/b": "<p>from B</p>" } });
      const proxy = await forwardProxy({ mode });
      await using _ = proxy.server;
      const curl = await run("curl", [
        "--silent",
        "--show-error",
        "--max-time",
        "20",
        "--proxy",
        proxy.url,
        `http://127.0.0.1:${a.addr.port}/a`,
        `http://127.0.0.1:${b.addr.port}/b`,
        `http://127.0.0.1:${a.addr.port}/big`,
      ]);
      assert.equal(curl.code, 0, curl.stderr);
      const want = concatBytes([
        encoder.encode("<p>from A</p><p>from B</p>"),
        big,
      ]);
      assert.equal(sha256(curl.bytes), sha256(want));
      // In worker and process modes a request's log line comes from the guest, a moment after
      // the reply has gone out: wait for all three rather than read them at once.
      await waitUntil(() => proxy.lines.length >= 3, 5000, "three log lines");
      assert.equal(proxy.lines.length, 3, proxy.lines.join("\n"));
      // One client connection carried all three requests, to two different hosts.
      assert.equal(clientsIn(proxy.lines).size, 1, proxy.lines.join("\n"));
      assert.match(
        proxy.lines[0],
        new RegExp(
          `^127\\.0\\.0\\.1:\\d+ GET http://127\\.0\\.0\\.1:${a.addr.port}/a 200 \\(\\d+ B up, \\d+ B down, [\\d.]+ ms\\)$`,
        ),
      );
      assert.match(proxy.lines[2], /\/big 200 \(\d+ B up, 293\.\d KiB down/);
      assert.equal(a.requests() + b.requests(), 3);
    },
  );
}

/** A TLS origin with a certificate made here by openssl, for 127.0.0.1. */
async function startTlsOrigin(dir: string, body: string) {
  const cert = `${dir}/cert.pem`;
  const key = `${dir}/key.pem`;
  const made = await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=127.0.0.1",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
    "-keyout",
    key,
    "-out",
    cert,
  ]);
  assert.equal(made.code, 0, made.stderr);
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(cert),
    key: await Deno.readTextFile(key),
    onListen: () => {},
  }, () => new Response(body));
  return { server, cert, port: server.addr.port };
}

for (const mode of MODES) {
  Deno.test(
    {
      name: `curl fetches HTTPS through CONNECT in ${mode} mode, checking the certificate`,
      ignore: !haveCommand("curl") || !haveCommand("openssl"),
    },
    async () => {
      await using dir = await tempFolder("forward_tls_");
      const tls = await startTlsOrigin(dir.path, "secret page over TLS");
      try {
        const proxy = await forwardProxy({ mode });
        await using _ = proxy.server;
        const curl = await run("curl", [
          "--silent",
          "--show-error",
          "--max-time",
          "20",
          "--cacert",
          tls.cert,
          "--proxy",
          proxy.url,
          `https://127.0.0.1:${tls.port}/`,
        ]);
        assert.equal(curl.code, 0, curl.stderr);
        assert.equal(curl.stdout, "secret page over TLS");
        // The line comes when the tunnel has closed, which curl does not wait for.
        await waitUntil(() => proxy.lines.length > 0, 5000, "the CONNECT log line");
        assert.equal(proxy.lines.length, 1, proxy.lines.join("\n"));
        assert.match(
          proxy.lines[0],
          new RegExp(
            `^127\\.0\\.0\\.1:\\d+ CONNECT 127\\.0\\.0\\.1:${tls.port} 200 \\([\\d.]+ (B|KiB) up, [\\d.]+ (B|KiB) down, [\\d.]+ ms\\): tunnel closed: `,
          ),
        );
      } finally {
        await tls.server.shutdown();
      }
    },
  );
}

Deno.test(
  {
    name: "Python's urllib with a ProxyHandler fetches through the forward proxy",
    ignore: !haveCommand("python3"),
  },
  async () => {
    await using origin = await startOrigin({ pages: { "/py": "<p>hello python</p>" } });
    const proxy = await forwardProxy();
    await using _ = proxy.server;
    const script = `
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": sys.argv[1]}))
with opener.open(sys.argv[2], timeout=20) as reply:
    print(reply.status, reply.read().decode())
`;
    const py = await run(
      "python3",
      ["-c", script, proxy.url, `http://127.0.0.1:${origin.addr.port}/py`],
      // urllib skips proxies for hosts listed in no_proxy; nothing may be skipped here.
      { no_proxy: "", NO_PROXY: "" },
    );
    assert.equal(py.code, 0, py.stderr);
    assert.equal(py.stdout.trim(), "200 <p>hello python</p>");
    await waitUntil(() => proxy.lines.length >= 1, 5000, "the log lines");
    assert.equal(proxy.lines.length, 1, proxy.lines.join("\n"));
    assert.match(proxy.lines[0], /GET http:\/\/127\.0\.0\.1:\d+\/py 200 /);
  },
);

/** Why the browser test cannot run here, or `null` when Chromium starts. */
const noChromium = await whyNoChromium();

Deno.test({
  name: `headless Chromium loads a page through the forward proxy and takes a screenshot${
    noChromium ? ` (skipped: ${noChromium})` : ""
  }`,
  ignore: noChromium !== null,
  async fn() {
    await using origin = await startOrigin({
      pages: {
        "/": `<!doctype html><html><head><title>via proxy</title></head>
<body style="font: 32px sans-serif"><h1>Fetched through proxy_server.ts --forward</h1></body></html>`,
      },
    });
    const proxy = await forwardProxy();
    await using _ = proxy.server;
    const page = `http://127.0.0.1:${origin.addr.port}/`;
    // Chromium never uses a proxy for loopback unless "<-loopback>" takes that rule away.
    const viaProxy = [`--proxy-server=${proxy.url}`, "--proxy-bypass-list=<-loopback>"];
    const dom = await runChromium([...viaProxy, "--dump-dom", page]);
    assert.ok(dom.ok, dom.stderr);
    assert.match(dom.stdout, /Fetched through proxy_server\.ts --forward/);
    assert.ok(
      proxy.lines.some((l) => l.includes(`GET ${page} 200 `)),
      proxy.lines.join("\n"),
    );

    await Deno.mkdir(projectPath("tests/tmp"), { recursive: true });
    const file = projectPath("tests/tmp/forward_proxy.png");
    const shot = await runChromium([
      ...viaProxy,
      "--window-size=1000,400",
      `--screenshot=${file}`,
      page,
    ]);
    assert.ok(shot.ok, shot.stderr);
    const png = await Deno.readFile(file);
    assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
    assert.ok(png.length > 3000, `screenshot is only ${png.length} bytes`);
  },
});

for (const mode of MODES) {
  Deno.test(`proxy_client.ts --forward through proxy_server.ts --forward --mode ${mode}`, async () => {
    const page = randomBytes(50_000, 9);
    await using origin = await startOrigin({ pages: { "/p.bin": page } });
    await using script = await startScript(
      "proxy_server.ts",
      ["--port", "0", "--forward", "--mode", mode, "--workers", "1"],
      { permissions: MODE_PERMISSIONS[mode] },
    );
    assert.ok(script.lines.some((l) => /forwarding HTTP and CONNECT to any host/.test(l)));
    const got = await runScript("proxy_client.ts", [
      "--forward",
      "--proxy",
      `127.0.0.1:${script.port}`,
      "--host",
      `127.0.0.1:${origin.addr.port}`,
      "--path",
      "/p.bin",
    ]);
    assert.equal(got.code, 0, got.stderr);
    const text = decoder.decode(got.stdout.subarray(0, 20));
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(sha256(got.stdout.subarray(got.stdout.length - page.length)), sha256(page));
    assert.match(got.stderr, /via 127\.0\.0\.1:\d+: HTTP\/1\.1 200 OK, /);
    await script.waitFor(/ GET http:\/\/127\.0\.0\.1:\d+\/p\.bin 200 /, 5000);
  });
}

// ---------------------------------------------------------------------------
// Framing: keep-alive, HTTP/1.0, chunks, bodies.

Deno.test("forward mode keeps the client connection across hosts, after refusals too", async () => {
  await using a = await startOrigin({ pages: { "/a": "A" } });
  await using b = await startOrigin({ pages: { "/b": "B" } });
  const probe = listenOn();
  const closedPort = probe.addr.port;
  probe.close();
  const proxy = await forwardProxy({ allow: ["127.0.0.1"] });
  await using _ = proxy.server;
  const conn = await Deno.connect({ port: proxy.server.addr.port });
  try {
    const reader = new HttpReader(conn);
    const ask = async (target: string, extra = "") => {
      await writeAll(conn, encoder.encode(`GET ${target} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`));
      return await readResponse(reader);
    };
    assert.equal((await ask(`http://127.0.0.1:${a.addr.port}/a`)).body, "A");
    assert.equal((await ask(`http://127.0.0.1:${b.addr.port}/b`)).body, "B");
    const refused = await ask(`http://127.0.0.1:${closedPort}/`);
    assert.equal(refused.head.status, 502);
    assert.match(
      refused.body,
      /^connection to 127\.0\.0\.1:\d+ refused: nothing is listening there\n$/,
    );
    const forbidden = await ask("http://localhost:1/");
    assert.equal(forbidden.head.status, 403);
    assert.equal(forbidden.body, "localhost:1 is not in this proxy's --allow list\n");
    // Still the same connection, and both origins kept theirs: one per host.
    assert.equal((await ask(`http://127.0.0.1:${a.addr.port}/a`)).body, "A");
    const last = await ask(`http://127.0.0.1:${b.addr.port}/b`, "Connection: close\r\n");
    assert.equal(last.body, "B");
    assert.match(
      last.head.headers.map((h) => `${h.name}: ${h.value}`).join("\n"),
      /Connection: close/,
    );
    assert.equal(
      decoder.decode(await readAll(conn)),
      "",
      "the proxy closes after Connection: close",
    );
  } finally {
    conn.close();
  }
  assert.equal(clientsIn(proxy.lines).size, 1, proxy.lines.join("\n"));
  await waitUntil(() => proxy.lines.length >= 6, 5000, "the log lines");
  assert.equal(proxy.lines.length, 6);
});

/** A raw origin that answers each request on a connection with `reply(index)` and records heads. */
function scriptedOrigin(reply: (request: string, index: number) => string | Uint8Array) {
  const heads: string[] = [];
  const origin = startRawOrigin(async (conn) => {
    const reader = new HttpReader(conn);
    while (true) {
      const lines = await reader.readHead();
      if (lines === null) return;
      heads.push(lines.join("\n"));
      const length = /content-length: (\d+)/i.exec(lines.join("\n"));
      let body = "";
      if (/transfer-encoding: chunked/i.test(lines.join("\n"))) {
        const parts: Uint8Array[] = [];
        await copyBody(
          reader,
          {
            write: (p) => (parts.push(p.slice()), Promise.resolve(p.length)),
          },
          { kind: "chunked" },
          "dechunk",
        );
        body = decoder.decode(concatBytes(parts));
      } else if (length) {
        const buf = new Uint8Array(Number(length[1]));
        let got = 0;
        while (got < buf.length) got += (await reader.read(buf.subarray(got)))!;
        body = decoder.decode(buf);
      }
      const out = reply(`${lines[0]}\n${body}`, heads.length - 1);
      await writeAll(conn, typeof out === "string" ? encoder.encode(out) : out);
      if (typeof out === "string" && /connection: close/i.test(out)) {
        await conn.closeWrite();
        return;
      }
    }
  });
  return { origin, heads };
}

Deno.test("forward mode: chunks pass through to HTTP/1.1, are removed for HTTP/1.0, and close-ended replies are re-chunked", async () => {
  const chunked =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  const { origin, heads } = scriptedOrigin((_, i) =>
    i < 2 ? chunked : "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nuntil the end"
  );
  await using _o = origin;
  const proxy = await forwardProxy();
  await using _ = proxy.server;
  const target = `http://127.0.0.1:${origin.port}/`;
  const conn = await Deno.connect({ port: proxy.server.addr.port });
  try {
    const reader = new HttpReader(conn);
    // HTTP/1.1: the chunks arrive as the origin sent them.
    await writeAll(conn, encoder.encode(`GET ${target} HTTP/1.1\r\n\r\n`));
    const first = await readResponse(reader);
    assert.equal(first.body, "hello world");
    // A close-ended reply is cut into chunks for a 1.1 client, whose connection stays open.
    await writeAll(conn, encoder.encode(`GET ${target}x HTTP/1.1\r\n\r\n`));
    // (index 1 is still chunked; index 2 is close-ended.)
    assert.equal((await readResponse(reader)).body, "hello world");
    await writeAll(conn, encoder.encode(`GET ${target}y HTTP/1.1\r\n\r\n`));
    const third = await readResponse(reader);
    assert.equal(third.body, "until the end");
    assert.ok(
      third.head.headers.some((h) => /transfer-encoding/i.test(h.name) && h.value === "chunked"),
    );
  } finally {
    conn.close();
  }
  // HTTP/1.0: bare data, ended by the end of the connection.
  const { origin: o2 } = scriptedOrigin(() => chunked);
  await using _o2 = o2;
  const old = await rawRequest(
    proxy.server.addr.port,
    `GET http://127.0.0.1:${o2.port}/ HTTP/1.0\r\n\r\n`,
  );
  assert.equal(split(old).body, "hello world");
  assert.doesNotMatch(old, /transfer-encoding/i);
  // Requests went upstream in origin form, without hop-by-hop headers, with our Via.
  assert.match(
    heads[0],
    /^GET \/ HTTP\/1\.1\nHost: 127\.0\.0\.1:\d+\nVia: 1\.1 lab-proxy-[0-9a-f]{8}$/,
  );
});

Deno.test("forward mode strips hop-by-hop headers and passes request bodies, chunked or by length", async () => {
  const { origin, heads } = scriptedOrigin((request) => {
    const body = request.split("\n").slice(1).join("\n");
    return `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  });
  await using _o = origin;
  const proxy = await forwardProxy();
  await using _ = proxy.server;
  const conn = await Deno.connect({ port: proxy.server.addr.port });
  try {
    const reader = new HttpReader(conn);
    await writeAll(
      conn,
      encoder.encode(
        `POST http://127.0.0.1:${origin.port}/up HTTP/1.1\r\nHost: wrong.example\r\n` +
          "Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nConnection: X-Hop\r\n" +
          "X-Hop: secret\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Kept: yes\r\n" +
          "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
      ),
    );
    assert.equal((await readResponse(reader)).body, "abcdefg");
    await writeAll(
      conn,
      encoder.encode(
        `PUT http://127.0.0.1:${origin.port}/up HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello`,
      ),
    );
    assert.equal((await readResponse(reader)).body, "hello");
  } finally {
    conn.close();
  }
  assert.equal(
    heads[0],
    `POST /up HTTP/1.1\nHost: 127.0.0.1:${origin.port}\nX-Kept: yes\nVia: 1.1 ${
      /lab-proxy-\w+/.exec(heads[0])![0]
    }\nTransfer-Encoding: chunked`,
  );
  assert.equal(heads.length, 2, "both requests went over one upstream connection");
});

// ---------------------------------------------------------------------------
// Bad input.

Deno.test("forward mode answers malformed requests with 400 and one line, then closes", async () => {
  const proxy = await forwardProxy();
  await using _ = proxy.server;
  const port = proxy.server.addr.port;
  const cases: [string, RegExp][] = [
    ["GET / HTTP/1.1\r\n\r\n", /^no host: send the full URL/],
    [
      "GET http://127.0.0.1:99999/ HTTP/1.1\r\n\r\n",
      /the port must be a whole number from 1 to 65535, got "99999"/,
    ],
    ["GET http:///nohost HTTP/1.1\r\n\r\n", /^no host in the request target\n$/],
    ["CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", /must look like HOST:PORT/],
    ["GET https://127.0.0.1/ HTTP/1.1\r\n\r\n", /https:\/\/ URLs go through CONNECT/],
    ["HELLO\r\n\r\n", /^bad request line "HELLO"/],
    ["GET / HTTP/2.0\r\nHost: a\r\n\r\n", /unsupported HTTP version/],
    [
      "POST http://127.0.0.1:1/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      /both Content-Length and Transfer-Encoding/,
    ],
    [
      `GET http://127.0.0.1:1/ HTTP/1.1\r\nX-Big: ${"x".repeat(100 * 1024)}\r\n\r\n`,
      /^header line longer than 8192 bytes\n$/,
    ],
  ];
  for (const [request, reason] of cases) {
    const answer = split(await rawRequest(port, request));
    assert.equal(answer.status, "HTTP/1.1 400 Bad Request", request.slice(0, 40));
    assert.match(answer.body, reason);
    assert.equal(answer.body.split("\n").length, 2, "one line");
  }
  await waitUntil(() => proxy.lines.length >= cases.length, 5000, "the log lines");
  assert.equal(proxy.lines.length, cases.length, proxy.lines.join("\n"));
  assert.ok(proxy.lines.every((l) => / 400 \(/.test(l)), proxy.lines.join("\n"));
  // And it keeps serving.
  await using origin = await startOrigin({ pages: { "/": "still here" } });
  assert.equal(
    split(await rawRequest(port, `GET http://127.0.0.1:${origin.addr.port}/ HTTP/1.0\r\n\r\n`))
      .body,
    "still here",
  );
});

Deno.test("forward mode: --allow patterns refuse CONNECT and GET with 403", async () => {
  await using origin = await startOrigin({ pages: { "/": "allowed" } });
  const allowedPort = origin.addr.port;
  const proxy = await forwardProxy({ allow: [`127.0.0.1:${allowedPort}`, "*.example.test:443"] });
  await using _ = proxy.server;
  const port = proxy.server.addr.port;
  const refused = split(
    await rawRequest(port, `CONNECT 127.0.0.1:22 HTTP/1.1\r\nConnection: close\r\n\r\n`),
  );
  assert.equal(refused.status, "HTTP/1.1 403 Forbidden");
  assert.equal(refused.body, "127.0.0.1:22 is not in this proxy's --allow list\n");
  const otherHost = split(
    await rawRequest(port, `GET http://localhost:${allowedPort}/ HTTP/1.0\r\n\r\n`),
  );
  assert.equal(otherHost.status, "HTTP/1.1 403 Forbidden");
  const ok = split(
    await rawRequest(port, `GET http://127.0.0.1:${allowedPort}/ HTTP/1.0\r\n\r\n`),
  );
  assert.equal(ok.body, "allowed");
  assert.match(proxy.lines[0], /CONNECT 127\.0\.0\.1:22 403 .*--allow list/);
});

Deno.test("parseAllowPattern() and isAllowed(): hosts, subdomains, ports, IPv6", () => {
  const rules = ["example.test", "*.corp.test:443", "[::1]:8000", "*:8443"].map(
    parseAllowPattern,
  );
  assert.ok(isAllowed(rules, "example.test", 80));
  assert.ok(isAllowed(rules, "EXAMPLE.test.", 1234));
  assert.ok(!isAllowed(rules, "www.example.test", 80));
  assert.ok(isAllowed(rules, "a.b.corp.test", 443));
  assert.ok(!isAllowed(rules, "corp.test", 443));
  assert.ok(!isAllowed(rules, "a.corp.test", 80));
  assert.ok(!isAllowed(rules, "evilcorp.test", 443));
  assert.ok(isAllowed(rules, "0:0:0:0:0:0:0:1", 8000));
  assert.ok(isAllowed(rules, "anything.test", 8443));
  assert.ok(isAllowed([], "anything.test", 1));
  for (const bad of ["", "*.", "a b", "host:0x1", "*.x:99999", "**.test"]) {
    assert.throws(() => parseAllowPattern(bad), /--allow/, bad);
  }
});

Deno.test("forward mode: half a request, then silence, is answered 408 and closed after the idle timeout", async () => {
  const proxy = await forwardProxy({ idleTimeoutSeconds: 0.5 });
  await using _ = proxy.server;
  const conn = await Deno.connect({ port: proxy.server.addr.port });
  try {
    await writeAll(conn, encoder.encode("GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: a"));
    const answer = split(decoder.decode(await withTimeout(readAll(conn), 5000, "the 408")));
    assert.equal(answer.status, "HTTP/1.1 408 Request Timeout");
    assert.equal(answer.body, "no complete request within 0.5 s\n");
  } finally {
    conn.close();
  }
  await waitUntil(() => proxy.lines.length >= 1, 5000, "the log lines");
  assert.equal(proxy.lines.length, 1, proxy.lines.join("\n"));
  assert.match(proxy.lines[0], /408: no complete request within 0\.5 s \(idle timeout\); closed/);
});

Deno.test("forward mode: a target that dies mid-reply gives a short reply, a logged reason, and serving goes on", async () => {
  const partial = [
    "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + "x".repeat(100),
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n64\r\nonly this",
  ];
  // Each connection gets the start of a reply, then the target goes away.
  await using origin = startRawOrigin(async (conn, index) => {
    await new HttpReader(conn).readHead();
    await writeAll(conn, encoder.encode(partial[index]));
    conn.close();
  });
  await using good = await startOrigin({ pages: { "/": "fine" } });
  const proxy = await forwardProxy();
  await using _ = proxy.server;
  const port = proxy.server.addr.port;
  for (const [i, body] of [[0, "x".repeat(100)], [1, "5\r\nhello\r\n64\r\nonly this"]] as const) {
    const answer = await rawRequest(
      port,
      `GET http://127.0.0.1:${origin.port}/${i} HTTP/1.1\r\n\r\n`,
    );
    // The client sees the reply as far as it came, then the end of the connection.
    assert.equal(split(answer).status, "HTTP/1.1 200 OK");
    assert.equal(split(answer).body, body);
  }
  assert.match(
    proxy.lines[0],
    / 200 .*: the target ended after 100 of 1000 body bytes; the client got a short reply$/,
  );
  assert.match(
    proxy.lines[1],
    / 200 .*: the target ended in the middle of a chunk; the client got a short reply$/,
  );
  // The proxy goes on serving.
  const after = await rawRequest(port, `GET http://127.0.0.1:${good.addr.port}/ HTTP/1.0\r\n\r\n`);
  assert.equal(split(after).body, "fine");
});

Deno.test("forward mode: unknown hosts are 502, silent ones 504 after the connect timeout", async () => {
  // A listener that never accepts, its backlog of one taken: further connects hang, as
  // behind a firewall that drops packets.
  const silent = listenOn({ backlog: 0 });
  const filler = await Deno.connect({ port: silent.addr.port });
  try {
    const proxy = await forwardProxy({ connectTimeoutSeconds: 0.5 });
    await using _ = proxy.server;
    const port = proxy.server.addr.port;
    const unknown = split(
      await rawRequest(port, "GET http://no-such-host.invalid/ HTTP/1.0\r\n\r\n"),
    );
    assert.equal(unknown.status, "HTTP/1.1 502 Bad Gateway");
    assert.match(
      unknown.body,
      /^cannot resolve host "no-such-host\.invalid"|no-such-host\.invalid/,
    );
    const started = performance.now();
    const slow = split(
      await rawRequest(
        port,
        `CONNECT 127.0.0.1:${silent.addr.port} HTTP/1.1\r\nConnection: close\r\n\r\n`,
      ),
    );
    assert.equal(slow.status, "HTTP/1.1 504 Gateway Timeout");
    assert.match(slow.body, /^connection to 127\.0\.0\.1:\d+ timed out after 0\.5 s\n$/);
    assert.ok(performance.now() - started >= 400);
    assert.match(proxy.lines[1], /CONNECT 127\.0\.0\.1:\d+ 504 /);
  } finally {
    filler.close();
    silent.close();
  }
});

Deno.test("forward mode detects a loop by its own Via name: 508, not a runaway", async () => {
  const proxy = await forwardProxy({ maxConns: 20 });
  await using _ = proxy.server;
  // A relay in front of the forward proxy: asking the forward proxy for the relay's address
  // sends the request round and round (forward -> relay -> forward -> ...).
  await using relayProxy = await startProxyServer({
    quiet: true,
    maxConns: 20,
    upstream: { hostname: "127.0.0.1", port: proxy.server.addr.port },
  });
  const answer = split(
    await rawRequest(
      proxy.server.addr.port,
      `GET http://127.0.0.1:${relayProxy.addr.port}/ HTTP/1.0\r\n\r\n`,
    ),
  );
  assert.equal(answer.status, "HTTP/1.1 508 Loop Detected");
  assert.match(answer.body, /^loop: this request already passed through lab-proxy-[0-9a-f]{8}\n$/);
  // One request from the client, and its one trip round the loop.
  await waitUntil(() => proxy.lines.length >= 2, 5000, "the log lines");
  assert.equal(proxy.lines.length, 2, proxy.lines.join("\n"));
});

Deno.test("startProxyServer({ forward }) refuses to be an open proxy on a public address", async () => {
  // Refused before anything listens, like a port in use.
  assert.throws(
    () => startProxyServer({ forward: true, hostname: "0.0.0.0" }),
    /refusing to run an open proxy on 0\.0\.0\.0: .*--allow HOST patterns, or --open/,
  );
  const run0 = await runScript("proxy_server.ts", [
    "--forward",
    "--host",
    "0.0.0.0",
    "--port",
    "0",
  ]);
  assert.equal(run0.code, 1);
  assert.match(run0.stderr, /^error: refusing to run an open proxy on 0\.0\.0\.0/);
  assert.equal(run0.stderr.trim().split("\n").length, 1);
});

Deno.test("proxy_server.ts --forward: bad flags print one line and the usage, and exit 2", async () => {
  for (
    const args of [
      ["--forward", "--upstream", "127.0.0.1:80"],
      ["--allow", "example.test"],
      ["--open"],
      ["--forward", "--allow", "a b"],
      ["--forward", "--allow", "example.test:99999"],
    ]
  ) {
    const run = await runScript("proxy_server.ts", args);
    assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
    const [first, second] = run.stderr.split("\n");
    assert.match(first, /^error: /);
    assert.match(second, /^usage: deno run --allow-net proxy_server\.ts/);
  }
  const help = await runScript("proxy_server.ts", ["--help"]);
  assert.match(decoder.decode(help.stdout), /an open proxy on 0\.0\.0\.0 lets anyone/);
});
