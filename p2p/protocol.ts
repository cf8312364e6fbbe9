/**
 * The P2P file synchronizer's tracker protocol as data: the message shapes,
 * strict parsers for both directions, the encoder that writes each message
 * as one line of JSON exactly as the course's Python programs do, and the
 * file-name check every peer applies before it serves or writes a name.
 *
 * Wire format (see `PROTOCOL.md` beside this file): one JSON object per line,
 * UTF-8, ending in `\n`. A peer sends `{"port": P, "files": [...]}` (Init) or
 * `{"port": P}` (KeepAlive); the tracker answers each with the directory
 * `{"name": {"ip": ..., "port": ..., "mtime": ...}, ...}`. Our extra fields
 * (`size`, `sha256`, `holders`) are ignored by the course's programs.
 *
 * @example
 * ```ts
 * import { encodeLine, parsePeerMessage } from "./protocol.ts";
 * const msg = parsePeerMessage('{"port": 8001, "files": [{"name": "a.txt", "mtime": 1700000000}]}');
 * encodeLine({ port: msg.port }); // the bytes of '{"port": 8001}\n'
 * ```
 * @module
 */

/**
 * Longest message line the tracker accepts from a peer: room for an Init
 * listing several thousand files with sizes and hashes; anything longer
 * closes that connection.
 */
export const TRACKER_MAX_LINE_BYTES = 1024 * 1024; // bytes

/**
 * Longest directory line a peer should accept from a tracker: the directory
 * lists every peer's files, so it may be far longer than one Init.
 */
export const DIRECTORY_MAX_LINE_BYTES = 16 * 1024 * 1024; // bytes

/**
 * Latest mtime a peer may announce: 2^32 - 1 s, 2106-02-07T06:28:15Z. No
 * real file is that new; a far later one (1e15 s is past the last date
 * JavaScript can show) broke the status page, and a file system stores
 * only so much (ext4 clamps at 2446), so a download given a later mtime
 * would come back different and be fetched again every round. The tracker
 * refuses a message with a later mtime; a peer skips such a directory entry.
 */
export const MAX_MTIME_SECONDS = 2 ** 32 - 1; // seconds since 1970

/** Longest file name, as most Linux file systems allow. */
export const MAX_FILE_NAME_BYTES = 255; // bytes of UTF-8

/** Extension "paths": longest relative path, as Linux's PATH_MAX allows. */
export const MAX_PATH_BYTES = 4096; // bytes of UTF-8

/** Extension "paths": most names in one relative path (`a/b/c.txt` has 3). */
export const MAX_PATH_DEPTH = 64; // names

/** One shared file as a peer announces it. */
export interface FileInfo {
  /** A plain file name; with extension "paths", a relative path (`docs/a.txt`). */
  name: string;
  /** Modification time in seconds since the epoch (whole seconds on the wire), at most {@linkcode MAX_MTIME_SECONDS}. */
  mtime: number;
  /** Extension: length in bytes. */
  size?: number;
  /** Extension: SHA-256 of the contents, 64 lowercase hex digits. */
  sha256?: string;
  /** Extension "versions": id of the peer that made this version. */
  by?: string;
  /** Extension "versions": SHA-256s of the versions this one was based on, newest first. */
  history?: string[];
}

/** Extension "versions": a deletion a peer made: which version, when (whole seconds). */
export interface DeletionInfo {
  name: string;
  sha256: string;
  time: number;
}

/** Init (`files` present) or KeepAlive (`files` may be present: a changed list). */
export interface PeerMessage {
  /** The port on which this peer serves files. */
  port: number;
  /** The files it shares. */
  files?: FileInfo[];
  /** Extension: this peer's id (kept across restarts). */
  id?: string;
  /** Extension: what this peer understands beyond the course's protocol (see {@linkcode FEATURES}). */
  features?: string[];
  /** Extension "versions": the deletions this peer made (sent with `files`). */
  deleted?: DeletionInfo[];
  /**
   * Our peers' downloads in progress, as they came: the tracker checks them
   * (`parseTransfers` in tracker_state.ts), since only it shows them.
   */
  transfers?: unknown;
  /** Extension "parts": this message carries one part of a file list, and more parts follow. */
  more?: boolean;
  /** Extension "parts": the directory revision this peer holds (absent: 0, none). */
  since?: number;
  /**
   * Extension "push": seconds the tracker may hold the reply until the
   * directory changes after `since` (absent or 0: answer at once).
   */
  wait?: number;
}

/**
 * The extensions our programs understand. A peer lists those it wants in
 * `features` (Init); the tracker answers with those it accepted in the
 * directory's {@linkcode META_KEY} entry and uses them only with that peer.
 */
export const FEATURES = ["versions", "paths", "parts", "range", "pipeline", "push"] as const;

/**
 * The extensions spoken between peers rather than with the tracker: the
 * tracker passes on which of them each holder accepted (a holder's
 * `features` in an entry's `holders`), and a downloader uses one with a
 * holder only when that list names it. "range": a request may start at an
 * offset (a download resumes); "pipeline": several requests on one
 * connection, answered in order.
 */
export const PEER_FEATURES: readonly string[] = ["range", "pipeline"];

/**
 * The directory key that carries the tracker's own word to a peer that asked
 * for features: never a file name (no path starts with `/`), and never sent
 * to a peer that did not ask.
 */
export const META_KEY = "/";

/** Longest peer id accepted on the wire. */
const PEER_ID = /^[A-Za-z0-9]{1,16}$/;

/** Versions a history may list on the wire. */
export const MAX_WIRE_HISTORY = 16;

/** One peer that holds a file, and the version it holds. */
export interface Holder {
  /** The peer's IP address as the tracker saw it on the socket. */
  ip: string;
  /** The peer's file-serving port. */
  port: number;
  /** The mtime of that peer's copy. */
  mtime: number;
  /**
   * Extension: the peer-to-peer features ({@linkcode PEER_FEATURES}) this
   * holder accepted that the asking peer asked for too; absent: none.
   */
  features?: string[];
}

/** Where to fetch one file: the holder of its newest version. */
export interface DirectoryEntry {
  /** The chosen holder's IP. */
  ip: string;
  /** The chosen holder's file-serving port. */
  port: number;
  /** The newest mtime known for this name. */
  mtime: number;
  /** Extension: length in bytes of the newest version, when its holder said. */
  size?: number;
  /** Extension: SHA-256 of the newest version, when its holder said. */
  sha256?: string;
  /** Extension: every live holder of the newest version, the chosen one included. */
  holders?: Holder[];
  /** Extension "versions": id of the peer that made this version. */
  by?: string;
  /** Extension "versions": the versions this one supersedes, newest first. */
  history?: string[];
  /** Extension "versions": versions that lost a conflict here, and the name each is kept under. */
  copies?: { sha256: string; name: string }[];
}

/** The tracker's answer: file name to entry. */
export type Directory = Record<string, DirectoryEntry>;

/** Extension "versions": a deleted path in the directory. */
export interface DeletedEntry {
  /** The version that was deleted. */
  sha256: string;
  /** Its ancestors: a copy holding any of them is deleted too. */
  history: string[];
  /** When, whole seconds since 1970. */
  time: number;
  /** Who deleted it. */
  by: string;
}

/** A tracker's whole answer: the entries, the deleted paths, and the features it accepted. */
export interface TrackerReply {
  directory: Directory;
  deleted: Record<string, DeletedEntry>;
  /** `null` when the reply had no {@linkcode META_KEY} entry (the course's tracker). */
  features: string[] | null;
  /** Extension "parts": names whose entry went away since the revision asked from. */
  absent?: string[];
  /** Extension "parts": the directory revision this reply brings the peer to. */
  rev?: number;
  /** Extension "parts": more changes wait; ask again (with `since: rev`) before planning. */
  more?: boolean;
  /** Extension "parts": forget the directory held; this reply starts it afresh. */
  reset?: boolean;
  /** Why the tracker refused this peer (it closes the connection after this reply). */
  error?: string;
}

/** A message that breaks the protocol; the reason says how. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

type Json = Record<string, unknown>;

function parseJsonObject(line: string, what: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new ProtocolError(`invalid JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(value)) {
    throw new ProtocolError(`${what} must be a JSON object, got ${describe(value)}`);
  }
  return value;
}

function isPlainObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Names a JSON value's type and shows a short sample, for error messages. */
function describe(value: unknown): string {
  const kind = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
  const text = JSON.stringify(value) ?? String(value);
  return `${kind} ${text.length > 40 ? text.slice(0, 40) + "…" : text}`;
}

function checkPort(value: unknown, where: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw new ProtocolError(
      `${where} must be a whole number from 1 to 65535, got ${describe(value)}`,
    );
  }
  return value;
}

/** An mtime: seconds >= 0, and at most `max` (a directory's may be larger: the peer decides). */
function checkMtime(value: unknown, where: string, max = Infinity): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value > max) {
    throw new ProtocolError(
      `${where} must be a number of seconds ${
        max === Infinity ? ">= 0" : `from 0 to ${max}`
      }, got ${describe(value)}`,
    );
  }
  return value;
}

function checkSize(value: unknown, where: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new ProtocolError(
      `${where} must be a whole number of bytes >= 0, got ${describe(value)}`,
    );
  }
  return value;
}

function checkSha256(value: unknown, where: string): string {
  if (typeof value !== "string" || !/^[0-9a-f]{64}$/.test(value)) {
    throw new ProtocolError(`${where} must be 64 lowercase hex digits, got ${describe(value)}`);
  }
  return value;
}

function checkPeerId(value: unknown, where: string): string {
  if (typeof value !== "string" || (value !== "" && !PEER_ID.test(value))) {
    throw new ProtocolError(`${where} must be up to 16 letters and digits, got ${describe(value)}`);
  }
  return value;
}

function checkHistory(value: unknown, where: string): string[] {
  if (!Array.isArray(value) || value.length > MAX_WIRE_HISTORY) {
    throw new ProtocolError(
      `${where} must be a list of at most ${MAX_WIRE_HISTORY} SHA-256s, got ${describe(value)}`,
    );
  }
  return value.map((h, i) => checkSha256(h, `${where}[${i}]`));
}

function checkStrings(value: unknown, where: string, max: number): string[] {
  if (!Array.isArray(value) || value.length > max || value.some((v) => typeof v !== "string")) {
    throw new ProtocolError(`${where} must be a list of at most ${max} strings`);
  }
  return value as string[];
}

function parseDeletion(value: unknown, where: string): DeletionInfo {
  if (!isPlainObject(value) || typeof value.name !== "string") {
    throw new ProtocolError(`${where} must be {"name", "sha256", "time"}, got ${describe(value)}`);
  }
  return {
    name: value.name,
    sha256: checkSha256(value.sha256, `${where}.sha256`),
    time: checkMtime(value.time, `${where}.time`, MAX_MTIME_SECONDS),
  };
}

function checkIp(value: unknown, where: string): string {
  if (typeof value !== "string" || value === "" || value.length > 64) {
    throw new ProtocolError(`${where} must be an IP address string, got ${describe(value)}`);
  }
  return value;
}

function parseFileInfo(value: unknown, where: string): FileInfo {
  if (!isPlainObject(value)) {
    throw new ProtocolError(`${where} must be an object, got ${describe(value)}`);
  }
  if (typeof value.name !== "string") {
    throw new ProtocolError(`${where}.name must be a string, got ${describe(value.name)}`);
  }
  const info: FileInfo = {
    name: value.name,
    mtime: checkMtime(value.mtime, `${where}.mtime`, MAX_MTIME_SECONDS),
  };
  if (value.size !== undefined) info.size = checkSize(value.size, `${where}.size`);
  if (value.sha256 !== undefined) info.sha256 = checkSha256(value.sha256, `${where}.sha256`);
  if (value.by !== undefined) info.by = checkPeerId(value.by, `${where}.by`);
  if (value.history !== undefined) info.history = checkHistory(value.history, `${where}.history`);
  return info;
}

/**
 * Parses one line a peer sent to the tracker (Init or KeepAlive). Types are
 * checked strictly; fields we do not know are ignored, as the course's
 * tracker ignores them. File names are only checked to be strings: whether a
 * name is safe is {@linkcode isSafeFileName}'s question.
 *
 * @example
 * ```ts
 * parsePeerMessage('{"port": 8001}'); // { port: 8001 }
 * parsePeerMessage('{"port": "8001"}'); // throws ProtocolError
 * ```
 * @throws {ProtocolError} with the reason, on anything else.
 */
export function parsePeerMessage(line: string): PeerMessage {
  const value = parseJsonObject(line, "message");
  if (value.port === undefined) {
    if ("serverip" in value || "serverport" in value) {
      throw new ProtocolError("the TLS key query is not supported by this tracker");
    }
    throw new ProtocolError(`message has no "port" field`);
  }
  const message: PeerMessage = { port: checkPort(value.port, "port") };
  if (value.files !== undefined) {
    if (!Array.isArray(value.files)) {
      throw new ProtocolError(`files must be an array, got ${describe(value.files)}`);
    }
    message.files = value.files.map((f, i) => parseFileInfo(f, `files[${i}]`));
  }
  if (value.id !== undefined) message.id = checkPeerId(value.id, "id");
  if (value.features !== undefined) message.features = checkStrings(value.features, "features", 32);
  if (value.deleted !== undefined) {
    if (!Array.isArray(value.deleted)) {
      throw new ProtocolError(`deleted must be an array, got ${describe(value.deleted)}`);
    }
    message.deleted = value.deleted.map((d, i) => parseDeletion(d, `deleted[${i}]`));
  }
  if (value.transfers !== undefined) message.transfers = value.transfers;
  if (value.more !== undefined) {
    if (typeof value.more !== "boolean") {
      throw new ProtocolError(`more must be true or false, got ${describe(value.more)}`);
    }
    message.more = value.more;
  }
  if (value.since !== undefined) message.since = checkRevision(value.since, "since");
  if (value.wait !== undefined) {
    if (typeof value.wait !== "number" || !(value.wait >= 0 && value.wait <= MAX_WAIT_SECONDS)) {
      throw new ProtocolError(
        `wait must be a number of seconds from 0 to ${MAX_WAIT_SECONDS}, got ${
          describe(value.wait)
        }`,
      );
    }
    message.wait = value.wait;
  }
  return message;
}

/** Extension "push": the longest `wait` a message may ask for (a tracker may hold less). */
export const MAX_WAIT_SECONDS = 3600;

function checkRevision(value: unknown, where: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new ProtocolError(`${where} must be a whole number >= 0, got ${describe(value)}`);
  }
  return value;
}

function parseHolder(value: unknown, where: string): Holder {
  if (!isPlainObject(value)) {
    throw new ProtocolError(`${where} must be an object, got ${describe(value)}`);
  }
  return {
    ip: checkIp(value.ip, `${where}.ip`),
    port: checkPort(value.port, `${where}.port`),
    mtime: checkMtime(value.mtime, `${where}.mtime`),
    ...(value.features === undefined
      ? {}
      : { features: checkStrings(value.features, `${where}.features`, 32) }),
  };
}

function parseEntry(value: unknown, where: string): DirectoryEntry {
  if (!isPlainObject(value)) {
    throw new ProtocolError(`${where} must be an object, got ${describe(value)}`);
  }
  const entry: DirectoryEntry = {
    ip: checkIp(value.ip, `${where}.ip`),
    port: checkPort(value.port, `${where}.port`),
    mtime: checkMtime(value.mtime, `${where}.mtime`),
  };
  if (value.size !== undefined) entry.size = checkSize(value.size, `${where}.size`);
  if (value.sha256 !== undefined) entry.sha256 = checkSha256(value.sha256, `${where}.sha256`);
  if (value.holders !== undefined) {
    if (!Array.isArray(value.holders)) {
      throw new ProtocolError(`${where}.holders must be an array, got ${describe(value.holders)}`);
    }
    entry.holders = value.holders.map((h, i) => parseHolder(h, `${where}.holders[${i}]`));
  }
  if (value.by !== undefined) entry.by = checkPeerId(value.by, `${where}.by`);
  if (value.history !== undefined) entry.history = checkHistory(value.history, `${where}.history`);
  if (value.copies !== undefined) {
    if (!Array.isArray(value.copies)) {
      throw new ProtocolError(`${where}.copies must be an array, got ${describe(value.copies)}`);
    }
    entry.copies = value.copies.map((c, i) => {
      const at = `${where}.copies[${i}]`;
      if (!isPlainObject(c) || typeof c.name !== "string") {
        throw new ProtocolError(`${at} must be {"sha256", "name"}, got ${describe(c)}`);
      }
      return { sha256: checkSha256(c.sha256, `${at}.sha256`), name: c.name };
    });
  }
  return entry;
}

function parseDeletedEntry(value: Json, where: string): DeletedEntry {
  return {
    sha256: checkSha256(value.sha256, `${where}.sha256`),
    history: value.history === undefined ? [] : checkHistory(value.history, `${where}.history`),
    time: checkMtime(value.time, `${where}.time`),
    by: value.by === undefined ? "" : checkPeerId(value.by, `${where}.by`),
  };
}

/**
 * Parses a tracker's whole answer: like {@linkcode parseDirectory}, and also
 * the extension entries a tracker sends only to a peer that asked for them:
 * the {@linkcode META_KEY} entry (the features it accepted) and deleted
 * paths (`{"deleted": true, ...}`).
 *
 * @example
 * ```ts
 * import { parseTrackerReply } from "./protocol.ts";
 * const reply = parseTrackerReply('{"/": {"features": ["versions"]}}');
 * reply.features; // ["versions"]
 * ```
 * @throws {ProtocolError} with the reason.
 */
export function parseTrackerReply(line: string): TrackerReply {
  const value = parseJsonObject(line, "directory");
  const reply: TrackerReply = { directory: {}, deleted: {}, features: null };
  for (const [name, entry] of Object.entries(value)) {
    const where = describeName(name);
    if (name === META_KEY && isPlainObject(entry)) {
      reply.features = checkStrings(entry.features ?? [], `${where}.features`, 32);
      // Extension "parts": where the directory stands, and a refusal's reason.
      if (entry.rev !== undefined) reply.rev = checkRevision(entry.rev, `${where}.rev`);
      if (entry.more === true) reply.more = true;
      if (entry.reset === true) reply.reset = true;
      if (typeof entry.error === "string") reply.error = entry.error;
    } else if (isPlainObject(entry) && entry.absent === true) {
      (reply.absent ??= []).push(name);
    } else if (isPlainObject(entry) && entry.deleted === true) {
      Object.defineProperty(reply.deleted, name, {
        value: parseDeletedEntry(entry, where),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else {
      // defineProperty, so even a name like "__proto__" stays an entry.
      Object.defineProperty(reply.directory, name, {
        value: parseEntry(entry, where),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
  }
  return reply;
}

/**
 * Parses one directory line from a tracker, as strictly as
 * {@linkcode parsePeerMessage}. Names are returned as they came: check each
 * with {@linkcode isSafeFileName} before using it as a path. An mtime past
 * {@linkcode MAX_MTIME_SECONDS} is kept too (the course's tracker passes any
 * number on), so that a peer can skip that one entry rather than the whole
 * directory.
 *
 * @example
 * ```ts
 * parseDirectory('{"a.txt": {"ip": "10.0.0.2", "port": 8001, "mtime": 1700000000}}');
 * ```
 * @throws {ProtocolError} with the reason.
 */
export function parseDirectory(line: string): Directory {
  const value = parseJsonObject(line, "directory");
  // fromEntries defines own properties, so even a name like "__proto__" stays an entry.
  return Object.fromEntries(
    Object.entries(value).map(([name, entry]) => [name, parseEntry(entry, describeName(name))]),
  );
}

function describeName(name: string): string {
  return `entry ${JSON.stringify(name.length > 40 ? name.slice(0, 40) + "…" : name)}`;
}

/**
 * Writes a value as Python's `json.dumps()` does with its defaults: `", "`
 * and `": "` between items, every character outside printable ASCII escaped
 * as `\uXXXX`. So our messages are byte for byte those of the course's
 * programs, and `nc` shows the same conversation.
 *
 * @example
 * ```ts
 * encodeJson({ port: 8001, files: [] }); // '{"port": 8001, "files": []}'
 * ```
 */
export function encodeJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isFinite(value)) throw new TypeError(`cannot encode ${value} as JSON`);
      return String(value);
    case "string":
      return encodeString(value);
    case "object": {
      if (Array.isArray(value)) return `[${value.map(encodeJson).join(", ")}]`;
      const items = Object.entries(value as Json)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${encodeString(k)}: ${encodeJson(v)}`);
      return `{${items.join(", ")}}`;
    }
    default:
      throw new TypeError(`cannot encode a ${typeof value} as JSON`);
  }
}

const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  "\\": "\\\\",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "\b": "\\b",
  "\f": "\\f",
};

function encodeString(text: string): string {
  // Python escapes everything outside " " to "~", one UTF-16 unit at a time.
  return `"${
    text.replace(
      /[^ -~]|["\\]/g,
      (c) => SHORT_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
    )
  }"`;
}

/**
 * One message as it goes on the wire: {@linkcode encodeJson} plus `\n`.
 *
 * @example
 * ```ts
 * new TextDecoder().decode(encodeLine({ port: 8001 })); // '{"port": 8001}\n'
 * ```
 */
export function encodeLine(value: unknown): Uint8Array {
  return new TextEncoder().encode(encodeJson(value) + "\n");
}

/**
 * Whether `name` may be used as a file name directly inside a shared
 * folder: not empty, not `.` or `..`, no `/` or `\`, no control characters
 * (NUL included), valid Unicode, at most 255 bytes of UTF-8. Peers check
 * every name both when serving a request and before writing a download.
 *
 * @example
 * ```ts
 * isSafeFileName("notes.txt"); // true
 * isSafeFileName("../etc/passwd"); // false
 * ```
 */
export function isSafeFileName(name: string): boolean {
  if (typeof name !== "string" || name === "" || name === "." || name === "..") return false;
  // deno-lint-ignore no-control-regex
  if (/[/\\\u0000-\u001f\u007f-\u009f]/.test(name)) return false;
  if (!name.isWellFormed()) return false;
  return new TextEncoder().encode(name).length <= MAX_FILE_NAME_BYTES;
}

/**
 * Why `path` may not be used as a relative path inside a shared folder
 * (extension "paths"), or `null` when it may: names separated by `/`, each
 * one a safe file name as {@linkcode isSafeFileName} says (no empty name, no
 * `.` or `..`, no backslash, no control characters), no leading `/`, at most
 * {@linkcode MAX_PATH_DEPTH} names and {@linkcode MAX_PATH_BYTES} bytes. This
 * is the one place these rules live: the tracker, the plan, the file server
 * and the downloads all ask it.
 *
 * @example
 * ```ts
 * import { pathProblem } from "./protocol.ts";
 * pathProblem("docs/2024/notes.txt"); // null
 * pathProblem("docs/../../etc/passwd"); // '".." is not allowed in a path'
 * ```
 */
export function pathProblem(path: string): string | null {
  if (typeof path !== "string" || path === "") return "empty name";
  if (path.startsWith("/")) return "absolute paths are not allowed";
  if (!path.isWellFormed()) return "broken Unicode in the name";
  if (new TextEncoder().encode(path).length > MAX_PATH_BYTES) {
    return `path longer than ${MAX_PATH_BYTES} bytes`;
  }
  const names = path.split("/");
  if (names.length > MAX_PATH_DEPTH) return `path deeper than ${MAX_PATH_DEPTH} names`;
  for (const name of names) {
    if (name === "") return path.endsWith("/") ? "a folder, not a file" : "empty name in the path";
    if (name === "." || name === "..") return `"${name}" is not allowed in a path`;
    if (name.includes("\\")) return "backslashes are not allowed";
    if (!isSafeFileName(name)) {
      return new TextEncoder().encode(name).length > MAX_FILE_NAME_BYTES
        ? `name longer than ${MAX_FILE_NAME_BYTES} bytes`
        : "control characters in the name";
    }
  }
  return null;
}

/**
 * Whether `path` is a safe relative path (see {@linkcode pathProblem}).
 *
 * @example
 * ```ts
 * import { isSafePath } from "./protocol.ts";
 * isSafePath("a/b.txt"); // true
 * isSafePath("/etc/passwd"); // false
 * ```
 */
export function isSafePath(path: string): boolean {
  return pathProblem(path) === null;
}

/** Names Windows keeps for devices, whatever the extension: `CON`, `nul.txt`, `COM1.log`. */
const WINDOWS_DEVICE = /^(con|prn|aux|nul|com[1-9]|lpt[1-9])(\.[^.]*)*$/i;
/** Characters Windows does not allow in a file name. */
const WINDOWS_FORBIDDEN = /[<>:"|?*]/;

/**
 * Why Windows could not store `path`, or `null` when it could: a device name
 * (`CON`, `PRN`, `AUX`, `NUL`, `COM1`-`COM9`, `LPT1`-`LPT9`, with any
 * extension), a name ending in a dot or a space, or one of `<>:"|?*`.
 * Linux and macOS store all of these, so peers there sync them; a peer on
 * Windows skips them (see `refusalReason` in `files.ts`).
 *
 * @example
 * ```ts
 * import { windowsNameProblem } from "./protocol.ts";
 * windowsNameProblem("logs/aux.txt"); // '"aux.txt" is a device name on Windows'
 * windowsNameProblem("notes.txt"); // null
 * ```
 */
export function windowsNameProblem(path: string): string | null {
  for (const name of path.split("/")) {
    if (WINDOWS_DEVICE.test(name)) return `"${name}" is a device name on Windows`;
    if (/[. ]$/.test(name)) return `"${name}" ends in a dot or a space, which Windows drops`;
    if (WINDOWS_FORBIDDEN.test(name)) return `"${name}" has a character Windows does not allow`;
  }
  return null;
}
