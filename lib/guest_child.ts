/**
 * Entry point of a pooled child process, inetd style: the host's messages
 * arrive as frames on stdin and ours leave as frames on stdout. Since stdout
 * carries frames, anything a handler prints goes to stderr instead.
 *
 * @module
 */

import { startGuest } from "./guest.ts";
import { FrameDecoder, FrameWriter, type HostMessage } from "./mux.ts";
import { writeAll } from "./net.ts";

// stdout carries frames: whatever a handler prints goes to stderr.
console.log = console.info = console.debug = console.error;

// Frames leave in order through one writer; when the host is gone nothing can be delivered
// any more, and the child ends.
const out = new FrameWriter((bytes) => writeAll(Deno.stdout, bytes), () => Deno.exit(0));
const route = startGuest({ copiesData: true, send: (message) => out.send(message) });

// Read frames until the host closes our stdin, which means "stop".
const frames = new FrameDecoder();
const buffer = new Uint8Array(256 * 1024);
while (true) {
  const n = await Deno.stdin.read(buffer);
  if (n === null) break;
  for (const message of frames.push(buffer.subarray(0, n))) {
    route(message as HostMessage);
  }
}
Deno.exit(0);
