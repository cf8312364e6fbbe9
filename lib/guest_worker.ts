/**
 * Entry point of a pooled Web Worker: messages arrive as structured clones,
 * and data chunks travel as transferred buffers (no copy between threads).
 *
 * @module
 */

import { startGuest } from "./guest.ts";
import type { GuestMessage, HostMessage } from "./mux.ts";

const scope = self as unknown as {
  postMessage(message: GuestMessage, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent<HostMessage>) => void) | null;
};

const route = startGuest({
  copiesData: false,
  send(message) {
    if (message.t === "data") scope.postMessage(message, [message.bytes.buffer]);
    else scope.postMessage(message);
  },
});
scope.onmessage = (event) => route(event.data);
