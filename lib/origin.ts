/**
 * A small local web server that stands in for www.google.com, since tests,
 * the lab walk-through and the benchmark must all work offline. It serves
 * fixed pages from memory over HTTP/1.0 and HTTP/1.1 (keep-alive included).
 *
 * @example
 * ```ts
 * import { startOrigin } from "./origin.ts";
 * await using origin = await startOrigin({ pages: { "/": "<h1>hello</h1>" } });
 * console.log(`try: deno run --allow-net client.ts --host 127.0.0.1 --port ${origin.addr.port}`);
 * ```
 * @module
 */

/** The page served at `/` when no pages are given. */
export const DEFAULT_PAGE = `<!doctype html>
<html><head><title>Local stand-in for www.google.com</title></head>
<body><h1>Hello from the lab's local web server</h1>
<p>This page came over a TCP connection on loopback.</p></body></html>
`;

/** Options for {@linkcode startOrigin}. */
export interface OriginOptions {
  /** Pages by path; a string is sent as UTF-8 HTML. @default {{ "/": DEFAULT_PAGE }} */
  pages?: Record<string, Uint8Array | string>;
  /** Address to bind. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port to bind; 0 picks a free one. @default {0} */
  port?: number;
}

/** A running origin server. */
export interface Origin extends AsyncDisposable {
  /** Where it listens. */
  readonly addr: Deno.NetAddr;
  /** Requests answered so far. */
  readonly requests: () => number;
  /** Stops it and closes its connections. */
  close(): Promise<void>;
}

/** Starts the origin; resolves once it is listening. */
export function startOrigin(options: OriginOptions = {}): Promise<Origin> {
  const pages = new Map<string, Uint8Array<ArrayBuffer>>();
  const encoder = new TextEncoder();
  for (const [path, body] of Object.entries(options.pages ?? { "/": DEFAULT_PAGE })) {
    pages.set(path, typeof body === "string" ? encoder.encode(body) : new Uint8Array(body));
  }
  let count = 0;
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 0,
      onListen: () => {},
    }, (request) => {
      count++;
      const body = pages.get(new URL(request.url).pathname);
      if (!body) return new Response("not found\n", { status: 404 });
      const type = body.length > 0 && body[0] === 0x3c
        ? "text/html; charset=utf-8"
        : "application/octet-stream";
      return new Response(body, { headers: { "content-type": type } });
    });
    const close = () => server.shutdown();
    resolve({
      addr: server.addr,
      requests: () => count,
      close,
      [Symbol.asyncDispose]: close,
    });
  });
}
