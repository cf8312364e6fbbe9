/**
 * Entry point of a pooled child process, inetd style: the host's messages
 * arrive as frames on stdin and ours leave as frames on stdout. Since stdout
 * carries frames, anything a handler prints goes to stderr instead.
 *
 * @module
 */

import { startGuest } from "./guest.ts";
import { encodeFrame, FrameDecoder, type HostMessage } from "./mux.ts";
import { writeAll } from "./net.ts";

/** Frames shorter than this are joined with their neighbours into one write. */
const SMALL_FRAME_BYTES = 4 * 1024;

console.log = console.info = console.debug = console.error;

// Frames leave in order through one writer. Runs of small frames (acknowledgements, ends,
// log lines) are joined into one write; data frames go out as they are, without another copy.
const pending: Uint8Array[] = [];
let flushing = false;
async function flush(): Promise<void> {
  if (flushing) return;
  flushing = true;
  try {
    while (pending.length > 0) {
      let batch = pending.shift()!;
      if (
        batch.length < SMALL_FRAME_BYTES && pending.length > 0 &&
        pending[0].length < SMALL_FRAME_BYTES
      ) {
        const parts = [batch];
        let size = batch.length;
        while (pending.length > 0 && pending[0].length < SMALL_FRAME_BYTES) {
          const next = pending.shift()!;
          parts.push(next);
          size += next.length;
        }
        batch = new Uint8Array(size);
        let at = 0;
        for (const part of parts) {
          batch.set(part, at);
          at += part.length;
        }
      }
      await writeAll(Deno.stdout, batch);
    }
  } catch {
    // The host is gone: nothing can be delivered any more.
    Deno.exit(0);
  } finally {
    flushing = false;
  }
}

const route = startGuest({
  copiesData: true,
  send(message) {
    pending.push(encodeFrame(message));
    flush();
  },
});

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
