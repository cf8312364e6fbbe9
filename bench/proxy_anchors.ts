/**
 * The proxy part's reference servers that need files written at run time:
 * nginx as the origin (the fastest web server we can run here, so that the
 * relays under test, not the origin, set the pace), haproxy as a TCP relay
 * (what an engineer would deploy), and the wrk script that sends
 * absolute-form requests, as a browser does to its proxy.
 *
 * @example
 * ```ts
 * import { haproxyConfig } from "./proxy_anchors.ts";
 * console.log(haproxyConfig(8080, "127.0.0.1:8000"));
 * ```
 * @module
 */

import { ORIGIN_FILES } from "./origin_server.ts";

/** Connections haproxy accepts at once: far above wrk's 50, and within a 20,000-descriptor limit. */
const HAPROXY_MAXCONN = 1024;
/** Connections the kernel queues before refusing, as for every other server in the bench. */
const LISTEN_BACKLOG = 1024;

/** `n` bytes of printable filler that does not start with `<`, as bench/origin_server.ts serves. */
function filler(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = 0x61 + (i % 26);
  return bytes;
}

/**
 * Writes the origin's files (`/1k`, `/10m`, the sizes of bench/origin_server.ts)
 * into `dir/www` and returns that folder.
 */
export async function writeOriginFiles(dir: string): Promise<string> {
  const root = `${dir}/www`;
  await Deno.mkdir(root, { recursive: true });
  for (const [path, size] of Object.entries(ORIGIN_FILES)) {
    await Deno.writeFile(`${root}${path}`, filler(size));
  }
  return root;
}

/**
 * An nginx configuration for the origin: one process in the foreground (no
 * master, so it runs as whoever starts it and its pid is the server's),
 * no access log, keep-alive without a request limit. The 1 KiB file is
 * copied from nginx's open-file cache (cheaper than `sendfile` for so few
 * bytes); the 10 MiB file goes out with `sendfile`, which costs the origin
 * almost no CPU.
 */
export function nginxConfig(dir: string, root: string, port: number): string {
  return `daemon off;
master_process off;
worker_processes 1;
error_log stderr warn;
pid ${dir}/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/octet-stream;
  types {}
  etag off;
  server_tokens off;
  tcp_nodelay on;
  keepalive_requests 100000000;
  open_file_cache max=16;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port} backlog=${LISTEN_BACKLOG};
    root ${root};
    location = /1k { sendfile off; }
    location = /10m { sendfile on; tcp_nopush on; }
  }
}
`;
}

/**
 * Writes nginx's configuration into `dir` and returns the command that runs
 * it in the foreground (`-e stderr`, so it never opens /var/log/nginx).
 */
export async function nginxCommand(nginx: string, dir: string, port: number): Promise<string[]> {
  const root = await writeOriginFiles(dir);
  const config = `${dir}/nginx.conf`;
  await Deno.writeTextFile(config, nginxConfig(dir, root, port));
  return [nginx, "-e", "stderr", "-p", dir, "-c", config];
}

/**
 * A haproxy configuration for a plain TCP relay from 127.0.0.1:`port` to
 * `upstream`: one thread (`nbthread 1`), defaults otherwise (haproxy sets
 * TCP_NODELAY on every socket by itself; no splicing).
 */
export function haproxyConfig(port: number, upstream: string): string {
  return `global
  nbthread 1
  maxconn ${HAPROXY_MAXCONN}
defaults
  mode tcp
  timeout connect 10s
  timeout client 60s
  timeout server 60s
listen relay
  bind 127.0.0.1:${port}
  server origin ${upstream}
`;
}

/**
 * Writes haproxy's configuration into `dir` and returns the command that
 * runs it in the foreground (`-db`).
 */
export async function haproxyCommand(
  haproxy: string,
  dir: string,
  port: number,
  upstream: string,
): Promise<string[]> {
  const config = `${dir}/haproxy.cfg`;
  await Deno.writeTextFile(config, haproxyConfig(port, upstream));
  return [haproxy, "-db", "-f", config];
}

/**
 * A wrk script whose requests are in absolute form (`GET http://host:port/1k
 * HTTP/1.1`), with the origin as Host. Set at load time, so wrk still builds
 * the request once and sends it as fast as with no script.
 */
export function absoluteFormScript(url: string): string {
  const host = new URL(url).host;
  return `-- Absolute-form requests, as a browser sends them to its proxy.
wrk.path = "${url}"
wrk.headers["Host"] = "${host}"
`;
}
