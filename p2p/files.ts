/**
 * The P2P peer's folder: which files it shares, opening one safely to serve
 * it, and downloading one into it without ever leaving a torn or wrong file
 * under its final name.
 *
 * - {@linkcode listSharedFiles} lists the plain files directly in the folder,
 *   skipping what the course's peers skip (subfolders, `*.py`, `*.so`,
 *   `*.dll`) and what we skip (dotfiles, which covers our temp files), with
 *   each file's size and SHA-256 for the tracker's extension fields.
 * - {@linkcode openSharedFile} opens a requested name only if it is a plain
 *   file directly in the folder; a symlink must lead to such a file too.
 * - {@linkcode downloadFile} streams a file from another peer into a hidden
 *   temp file, checks its length and SHA-256, sets its mtime, and only then
 *   renames it into place: a reader (or a killed peer) sees the old file or
 *   the whole new one, never half of it.
 *
 * @example
 * ```ts
 * import { listSharedFiles } from "./files.ts";
 * for (const file of await listSharedFiles("/tmp/share")) console.log(file.name, file.size);
 * ```
 * @module
 */

import { createHash } from "node:crypto";
import { errorMessage } from "../lib/cli.ts";
import { LineReader, LineTooLongError } from "../lib/lines.ts";
import {
  closeQuietly,
  connectTo,
  formatAddr,
  type Reader,
  writeAll,
  type Writer,
} from "../lib/net.ts";
import {
  type FileInfo,
  isSafeFileName,
  MAX_FILE_NAME_BYTES,
  MAX_MTIME_SECONDS,
} from "./protocol.ts";

/**
 * Bytes per read and write while a file travels, on both sides: 256 KiB
 * moved a large file about 1.5 times as fast as 64 KiB here, and is still
 * little memory per transfer. Small files get a buffer of their own size.
 */
export const TRANSFER_BUFFER_BYTES = 256 * 1024; // bytes
/** Bytes per read while hashing a file of our own. */
const HASH_BUFFER_BYTES = 1024 * 1024; // bytes
/** Longest `Content-Length:` header line we read from another peer. */
export const MAX_HEADER_BYTES = 256; // bytes
/** Longest file request line we read: a name is at most 255 bytes, plus room for a "\r". */
export const MAX_REQUEST_BYTES = MAX_FILE_NAME_BYTES + 1; // bytes
/** Largest file we agree to receive: anything bigger is refused before a byte is stored. */
export const MAX_FILE_BYTES = 2 ** 40; // bytes (1 TiB)
/** How a temp file ends; with the leading dot the listing never shares it. */
const TEMP_SUFFIX = ".part";
/** Our temp files: `.<name>.<12 hex digits>.part` (or a hash instead of a long name). */
const TEMP_NAME = /^\..+\.[0-9a-f]{12}\.part$/;
/** Names longer than this are replaced by their hash inside a temp name (255-byte limit). */
const TEMP_NAME_KEEP_BYTES = 200; // bytes

/** Why a name is not served or written: `null` when it is fine. */
export function refusalReason(name: string): string | null {
  if (name === "") return "empty name";
  if (name === "." || name === "..") return `"${name}" is a folder, not a file`;
  if (name.includes("/") || name.includes("\\")) return "path separators are not allowed";
  if (!isSafeFileName(name)) {
    return new TextEncoder().encode(name).length > MAX_FILE_NAME_BYTES
      ? `name longer than ${MAX_FILE_NAME_BYTES} bytes`
      : "control characters or broken Unicode in the name";
  }
  if (name.startsWith(".")) return "hidden and temporary files are not shared";
  if (/\.(py|so|dll)$/i.test(name)) return "*.py, *.so and *.dll files are not shared";
  return null;
}

/**
 * Whether a name is shared: safe (see `isSafeFileName`), not a dotfile or
 * temp file, not `*.py`, `*.so` or `*.dll`.
 *
 * @example
 * ```ts
 * isSharedName("notes.txt"); // true
 * isSharedName("peer.py"); // false
 * ```
 */
export function isSharedName(name: string): boolean {
  return refusalReason(name) === null;
}

/** Whether `name` is one of our own temp files (left behind by a killed peer). */
export function isTempName(name: string): boolean {
  return TEMP_NAME.test(name);
}

/** A fresh temp file name for a download of `name`; hidden, so never shared. */
export function tempNameFor(name: string): string {
  const random = crypto.getRandomValues(new Uint8Array(6));
  const tag = Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
  const base = new TextEncoder().encode(name).length <= TEMP_NAME_KEEP_BYTES
    ? name
    : createHash("sha256").update(name).digest("hex").slice(0, 32);
  return `.${base}.${tag}${TEMP_SUFFIX}`;
}

/** Joins the folder and a name already checked to be a plain file name. */
export function pathIn(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, "")}/${name}`;
}

/** One shared file as the listing saw it. */
export interface LocalFile extends FileInfo {
  /** Modification time in whole seconds (rounded down), as on the wire. */
  mtime: number;
  /** Length in bytes. */
  size: number;
  /** SHA-256 of the contents, lowercase hex. */
  sha256: string;
}

/** Remembers hashes so that an unchanged file is not read again every round. */
export class HashCache {
  #entries = new Map<string, { key: string; sha256: string }>();

  /** The cached hash of `name` if its size, mtime, ctime and inode are unchanged. */
  get(name: string, info: Deno.FileInfo): string | undefined {
    const hit = this.#entries.get(name);
    return hit && hit.key === cacheKey(info) ? hit.sha256 : undefined;
  }

  /**
   * Stores the hash of `name` as it is now, unless the file changed too
   * recently to trust its stat: `cp -p` or `touch -d` can rewrite a file and
   * put its old mtime back within the second its ctime still shows (Deno
   * gives ctime in whole seconds), which the key could not tell apart. Such
   * a file is simply hashed again next time (git's "racily clean" rule).
   */
  set(name: string, info: Deno.FileInfo, sha256: string, now: number = Date.now()): void {
    const changed = Math.max(info.ctime?.getTime() ?? now, info.mtime?.getTime() ?? now);
    if (now - changed < RACY_MS) {
      this.#entries.delete(name);
      return;
    }
    this.#entries.set(name, { key: cacheKey(info), sha256 });
  }

  /** Forgets names not in `keep`. */
  prune(keep: Set<string>): void {
    for (const name of this.#entries.keys()) if (!keep.has(name)) this.#entries.delete(name);
  }
}

/** A file changed less than this long ago is hashed again next time (see `HashCache.set`). */
const RACY_MS = 2_000;

function cacheKey(info: Deno.FileInfo): string {
  // ctime too: it changes on every write and nobody can set it back, unlike the mtime.
  return `${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}:${info.ino}:${info.dev}`;
}

/**
 * Lists the shared files of `dir`, sorted by name, with size, whole-second
 * mtime and SHA-256. Files that vanish while listed are left out.
 */
export async function listSharedFiles(
  dir: string,
  cache: HashCache = new HashCache(),
): Promise<LocalFile[]> {
  const files: LocalFile[] = [];
  // One buffer for the whole listing: a thousand small files must not cost a thousand.
  const buffer = new Uint8Array(HASH_BUFFER_BYTES);
  for await (const entry of Deno.readDir(dir)) {
    // Subfolders are skipped; a symlink counts only if it leads to a plain file here.
    if (!isSharedName(entry.name) || entry.isDirectory) continue;
    try {
      const opened = await openSharedFile(dir, entry.name);
      try {
        let sha256 = cache.get(entry.name, opened.info);
        if (sha256 === undefined) {
          sha256 = await hashFile(opened.file, buffer);
          cache.set(entry.name, opened.info, sha256);
        }
        files.push({
          name: entry.name,
          mtime: wholeSeconds(opened.info),
          size: opened.info.size,
          sha256,
        });
      } finally {
        opened.file.close();
      }
    } catch (err) {
      if (!(err instanceof RefusedError)) throw err;
    }
  }
  cache.prune(new Set(files.map((f) => f.name)));
  return files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** A file's mtime in whole seconds, rounded down, as the protocol carries it. */
export function wholeSeconds(info: Deno.FileInfo): number {
  return Math.floor((info.mtime?.getTime() ?? 0) / 1000);
}

/** SHA-256 of an open file from its current position to the end, read in chunks. */
export async function hashFile(
  file: Reader,
  buffer: Uint8Array = new Uint8Array(HASH_BUFFER_BYTES),
): Promise<string> {
  const hash = createHash("sha256");
  while (true) {
    const n = await file.read(buffer);
    if (n === null) return hash.digest("hex");
    hash.update(buffer.subarray(0, n));
  }
}

/** A name that is not a plain shared file directly in the folder. */
export class RefusedError extends Error {
  override name = "RefusedError";
}

/** A file opened by {@linkcode openSharedFile}. */
export interface OpenedFile {
  /** Open for reading, at position 0. */
  file: Deno.FsFile;
  /** Its metadata, taken from the open file itself. */
  info: Deno.FileInfo;
}

/**
 * Opens `name` for reading if it is a shared plain file directly in `dir`
 * (which must be a real path, no symlinks in it). A symlink is followed only
 * when it leads to a plain file directly in `dir`. The file is checked
 * after opening too, so swapping it for a symlink at the wrong moment does
 * not help.
 *
 * @throws {RefusedError} with a reason a log line can show.
 */
export async function openSharedFile(dir: string, name: string): Promise<OpenedFile> {
  const reason = refusalReason(name);
  if (reason !== null) throw new RefusedError(reason);
  let target = pathIn(dir, name);
  let before: Deno.FileInfo;
  try {
    before = await Deno.lstat(target);
    if (before.isSymlink) {
      target = await Deno.realPath(target);
      if (target.slice(0, target.lastIndexOf("/")) !== dir.replace(/\/+$/, "")) {
        throw new RefusedError("symlink leads out of the shared folder");
      }
      if (!isSharedName(target.slice(target.lastIndexOf("/") + 1))) {
        throw new RefusedError("symlink leads to a file that is not shared");
      }
      before = await Deno.lstat(target);
    }
  } catch (err) {
    if (err instanceof RefusedError) throw err;
    if (err instanceof Deno.errors.NotFound) throw new RefusedError("no such file");
    if (err instanceof Deno.errors.NotCapable) {
      throw new RefusedError("symlink leads out of the shared folder");
    }
    throw new RefusedError(`cannot read it: ${errorMessage(err)}`);
  }
  if (!before.isFile) throw new RefusedError("not a plain file");
  let file: Deno.FsFile;
  try {
    file = await Deno.open(target, { read: true });
  } catch (err) {
    throw new RefusedError(`cannot open it: ${errorMessage(err)}`);
  }
  const info = await file.stat();
  if (!info.isFile || info.ino !== before.ino || info.dev !== before.dev) {
    file.close();
    throw new RefusedError("the file changed while it was being opened");
  }
  return { file, info };
}

/** Removes temp files a killed peer left behind; returns their names. */
export async function removeStaleTempFiles(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && isTempName(entry.name)) {
      await Deno.remove(pathIn(dir, entry.name)).catch(() => {});
      removed.push(entry.name);
    }
  }
  return removed;
}

/** A download that failed; the temp file is already gone. */
export class DownloadError extends Error {
  override name = "DownloadError";
}

/**
 * A download that arrived whole but was not put in place: the file here
 * changed meanwhile (edited, say) or is at least as new, and a download
 * must never overwrite a newer local edit. The temp file is already gone.
 */
export class LocalChangeError extends DownloadError {
  override name = "LocalChangeError";
}

/** What to fetch, from whom, and what it must turn out to be. */
export interface DownloadOptions {
  /** The folder to write into (a real path). */
  dir: string;
  /** The file name; it must pass {@linkcode isSharedName}. */
  name: string;
  /** The holder's IP address or host name. */
  hostname: string;
  /** The holder's file-serving port. */
  port: number;
  /** The mtime (seconds) to give the file, as the directory says. */
  mtime: number;
  /** The expected length, when the directory gives one. */
  size?: number;
  /** The expected SHA-256 (hex), when the directory gives one. */
  sha256?: string;
  /**
   * The mtime (whole seconds) of the file here when the download was
   * planned, or `null` when there was none. If the file differs from that
   * just before the rename, the download is dropped. @default {undefined: compared with the
   * file as the download started only}
   */
  localMtime?: number | null;
  /**
   * The plan compared versions by content (the "versions" extension): the
   * download replaces a copy the swarm has seen superseded, however new its
   * mtime looks, so only a change made here meanwhile stops it.
   * @default {false}
   */
  byContent?: boolean;
  /** Seconds to wait for the connection. @default {5} */
  connectTimeoutSeconds?: number;
  /** Seconds without a single byte before giving up. @default {30} */
  idleTimeoutSeconds?: number;
  /** Largest Content-Length accepted. @default {MAX_FILE_BYTES} */
  maxBytes?: number;
  /** Called after each chunk with the bytes so far and the total. */
  onProgress?: (received: number, total: number) => void;
  /** Aborting closes the connection and removes the temp file. */
  signal?: AbortSignal;
}

/** What a finished download was. */
export interface DownloadResult {
  /** Bytes received. */
  bytes: number;
  /** Seconds from connecting to the rename. */
  seconds: number;
  /** SHA-256 of what was received. */
  sha256: string;
  /** Whether the hash was checked against the directory's. */
  verified: boolean;
  /** The file's metadata once in place. */
  info: Deno.FileInfo;
}

/**
 * Fetches one file from a holder: sends the name and `\n`, reads
 * `Content-Length: N`, streams exactly N bytes into a temp file while
 * hashing them, checks length and hash, sets the mtime, and renames the temp
 * file over `name`, unless the file there changed meanwhile or is at least
 * as new. On any failure the temp file is removed and the final name is
 * left as it was.
 *
 * @throws {LocalChangeError} when the file here changed or is as new: it is kept.
 * @throws {DownloadError} saying what else went wrong.
 */
export async function downloadFile(options: DownloadOptions): Promise<DownloadResult> {
  const { dir, name } = options;
  const reason = refusalReason(name);
  // Never write a name that could leave the folder, whatever a directory says.
  if (reason !== null) throw new DownloadError(`refused to write "${name}": ${reason}`);
  // Checked before a byte moves: a file system could not store it, and the file would come again.
  if (!(options.mtime >= 0 && options.mtime <= MAX_MTIME_SECONDS)) {
    throw new DownloadError(`refused to fetch "${name}": mtime ${options.mtime} is out of range`);
  }
  const started = performance.now();
  const where = formatAddr({ hostname: options.hostname, port: options.port });
  let conn: Deno.TcpConn;
  try {
    conn = await connectTo(options.hostname, options.port, options.connectTimeoutSeconds ?? 5);
  } catch (err) {
    throw new DownloadError(errorMessage(err));
  }
  const onAbort = () => closeQuietly(conn);
  options.signal?.addEventListener("abort", onAbort);
  const reader = new IdleReader(conn, (options.idleTimeoutSeconds ?? 30) * 1000);
  const tempPath = pathIn(dir, tempNameFor(name));
  const target = pathIn(dir, name);
  let file: Deno.FsFile | null = null;
  try {
    // The file here as the download starts, to notice an edit made while the bytes travel.
    const before = await statOrNull(target);
    await writeAll(conn, new TextEncoder().encode(name + "\n"));
    const total = await readContentLength(reader, options, where);
    file = await Deno.open(tempPath, { write: true, createNew: true, mode: 0o644 });
    const hash = createHash("sha256");
    let received = 0;
    const take = async (chunk: Uint8Array) => {
      hash.update(chunk);
      await writeAll(file!, chunk);
      received += chunk.length;
      options.onProgress?.(received, total);
    };
    // Bytes of the body that arrived together with the header line.
    const early = reader.lines.takeBuffered();
    if (early.length > 0) await take(early.subarray(0, total));
    const buffer = new Uint8Array(Math.max(1, Math.min(TRANSFER_BUFFER_BYTES, total)));
    while (received < total) {
      const n = await reader.read(buffer.subarray(0, Math.min(buffer.length, total - received)));
      if (n === null) {
        throw new DownloadError(`short transfer from ${where}: got ${received} of ${total} bytes`);
      }
      await take(buffer.subarray(0, n));
    }
    const sha256 = hash.digest("hex");
    if (options.sha256 !== undefined && options.sha256.toLowerCase() !== sha256) {
      throw new DownloadError(
        `wrong bytes from ${where}: SHA-256 ${sha256.slice(0, 12)}… instead of ${
          options.sha256.slice(0, 12)
        }…`,
      );
    }
    // On disk before it gets its name, so a crash cannot leave a torn file under that name.
    await file.syncData();
    file.close();
    file = null;
    const mtime = new Date(options.mtime * 1000);
    await Deno.utime(tempPath, mtime, mtime);
    // Looked at again just before the rename: a newer local edit must not be overwritten.
    const changed = localChange(await statOrNull(target), before, options);
    if (changed !== null) throw new LocalChangeError(changed);
    await Deno.rename(tempPath, target);
    const info = await Deno.stat(target);
    return {
      bytes: received,
      seconds: (performance.now() - started) / 1000,
      sha256,
      verified: options.sha256 !== undefined,
      info,
    };
  } catch (err) {
    file?.close();
    await Deno.remove(tempPath).catch(() => {});
    if (err instanceof DownloadError) throw err;
    if (options.signal?.aborted) throw new DownloadError("stopped");
    if (reader.timedOut) {
      throw new DownloadError(
        `${where} sent nothing for ${options.idleTimeoutSeconds ?? 30} s: gave up`,
      );
    }
    throw new DownloadError(`transfer from ${where} failed: ${errorMessage(err)}`);
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    reader.stop();
    closeQuietly(conn);
  }
}

/**
 * The file's metadata, or `null` when there is none. Symlinks are followed,
 * as the listing follows them, so the mtimes compare with the planned one.
 */
async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/**
 * Why the file here must not be replaced by the download, or `null` when it
 * may be: it appeared or changed since the download was planned or started,
 * or it is at least as new as the download. A file that is gone is nothing
 * to lose.
 */
function localChange(
  now: Deno.FileInfo | null,
  before: Deno.FileInfo | null,
  options: DownloadOptions,
): string | null {
  if (now === null) return null;
  const mtime = wholeSeconds(now);
  if (before === null || options.localMtime === null) {
    return `${options.name} appeared here meanwhile (mtime ${mtime})`;
  }
  const same = now.ino === before.ino && now.dev === before.dev && now.size === before.size &&
    now.mtime?.getTime() === before.mtime?.getTime() &&
    now.ctime?.getTime() === before.ctime?.getTime();
  if (!same || (options.localMtime !== undefined && mtime !== options.localMtime)) {
    return `${options.name} changed here meanwhile (mtime now ${mtime})`;
  }
  if (!options.byContent && mtime >= Math.floor(options.mtime)) {
    return `${options.name} here is as new (mtime ${mtime} >= ${Math.floor(options.mtime)})`;
  }
  return null;
}

/** Reads and checks the header line; returns N. */
async function readContentLength(
  reader: IdleReader,
  options: DownloadOptions,
  where: string,
): Promise<number> {
  let line: string | null;
  try {
    line = await reader.lines.readLine();
  } catch (err) {
    if (err instanceof LineTooLongError) {
      throw new DownloadError(`${where} sent a header longer than ${MAX_HEADER_BYTES} bytes`);
    }
    throw err;
  }
  if (line === null) {
    throw new DownloadError(`${where} closed the connection without a Content-Length`);
  }
  const match = /^Content-Length:[ \t]*(\d{1,16})[ \t]*$/i.exec(line);
  if (!match) {
    throw new DownloadError(`${where} sent a bad header: ${JSON.stringify(line.slice(0, 80))}`);
  }
  const total = Number(match[1]);
  const max = options.maxBytes ?? MAX_FILE_BYTES;
  if (total > max) {
    throw new DownloadError(`${where} offers ${total} bytes, more than the ${max} we accept`);
  }
  if (options.size !== undefined && total !== options.size) {
    throw new DownloadError(
      `${where} offers ${total} bytes but the directory says ${options.size}`,
    );
  }
  return total;
}

/**
 * A connection's reader that gives up when nothing arrives for a while: a
 * stalled holder must not hold a download slot forever.
 */
class IdleReader implements Reader {
  readonly lines: LineReader;
  timedOut = false;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(readonly conn: Deno.Conn, readonly idleMs: number) {
    this.lines = new LineReader(this, MAX_HEADER_BYTES);
  }

  async read(p: Uint8Array): Promise<number | null> {
    this.#timer = setTimeout(() => {
      this.timedOut = true;
      closeQuietly(this.conn);
    }, this.idleMs);
    try {
      return await this.conn.read(p);
    } finally {
      clearTimeout(this.#timer);
    }
  }

  stop(): void {
    clearTimeout(this.#timer);
  }
}

/**
 * A connection's writer that gives up when no write completes for a while
 * (the twin of the reader above): a client that asked for a file and then
 * stopped reading must not hold the connection and the open file forever.
 * Each write arms the timer again; when it fires the connection is closed,
 * so the pending write fails and `timedOut` says why.
 *
 * @example
 * ```ts
 * import { writeAll } from "../lib/net.ts";
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: 8000 });
 * const out = new IdleWriter(conn, 30_000);
 * await writeAll(out, new TextEncoder().encode("a.txt\n"));
 * ```
 */
export class IdleWriter implements Writer {
  /** Whether the connection was closed because a write took too long. */
  timedOut = false;

  constructor(
    readonly conn: Writer & { close(): void },
    readonly idleMs: number,
  ) {}

  async write(p: Uint8Array): Promise<number> {
    const timer = setTimeout(() => {
      this.timedOut = true;
      closeQuietly(this.conn);
    }, this.idleMs);
    try {
      return await this.conn.write(p);
    } finally {
      clearTimeout(timer);
    }
  }
}
