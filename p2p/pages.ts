/**
 * Big folders in small messages (the "parts" extension): a file list cut into
 * parts that each fit well inside the tracker's line limit, and a log of
 * directory changes that lets the tracker answer "what changed since
 * revision R?" one page at a time, instead of sending every peer the whole
 * directory every round. Pure: no sockets, no clock.
 *
 * @module
 */

/** Bytes of JSON a part of a file list may take (the tracker accepts lines up to 1 MiB). */
export const PART_BYTES = 256 * 1024;

/** Directory entries in one page. */
export const PAGE_ENTRIES = 2_000;

/** Bytes of encoded entries in one page, at most (a single larger entry still goes alone). */
export const PAGE_BYTES = 512 * 1024;

/**
 * Cuts `items` into consecutive parts whose encodings (by `size`) add up to
 * at most `budget` bytes each; an item larger than the budget is a part of
 * its own. An empty list is one empty part, so there is always a message.
 *
 * @example
 * ```ts
 * import { splitIntoParts } from "./pages.ts";
 * splitIntoParts([1, 2, 3, 4], (n) => n * 10, 50); // [[1, 2], [3], [4]]
 * ```
 */
export function splitIntoParts<T>(
  items: readonly T[],
  size: (item: T) => number,
  budget = PART_BYTES,
): T[][] {
  const parts: T[][] = [];
  let current: T[] = [];
  let used = 0;
  for (const item of items) {
    const cost = size(item) + 2; // ", " between items
    if (current.length > 0 && used + cost > budget) {
      parts.push(current);
      current = [];
      used = 0;
    }
    current.push(item);
    used += cost;
  }
  parts.push(current);
  return parts;
}

/** One page of changes: the names changed since the asked revision, in change order. */
export interface Page {
  /** Names whose entry changed (or went away) since the asked revision, at most a page of them. */
  names: string[];
  /** The revision to ask from next time: the last change included. */
  rev: number;
  /** Whether more changes wait after this page. */
  more: boolean;
  /** The asked revision is older than what the log remembers: forget everything, this is a fresh start. */
  reset: boolean;
}

/**
 * The changes to one view of the directory, in order. Every change to a name
 * gets the next revision and moves the name to the end, so the names changed
 * after revision R are a tail of the log. The log remembers each name once;
 * names whose entry went away are remembered too (a peer must hear that),
 * up to `maxGone` of them, after which the oldest are forgotten and a peer
 * asking from before them starts afresh.
 *
 * @example
 * ```ts
 * import { ChangeLog } from "./pages.ts";
 * const log = new ChangeLog();
 * log.touch("a.txt");
 * log.touch("b.txt");
 * log.page(1, () => 10).names; // ["b.txt"]
 * ```
 */
export class ChangeLog {
  /** Name to the revision of its last change, in change order. */
  #revs = new Map<string, number>();
  /** Names whose entry went away, oldest first (a subset of the log). */
  #gone = new Set<string>();
  #rev = 0;
  /** Changes older than this were forgotten: asking from before it means a fresh start. */
  #floor = 0;
  #maxGone: number;

  /** A log that remembers at most `maxGone` names whose entry went away. */
  constructor(maxGone = 100_000) {
    this.#maxGone = maxGone;
  }

  /** The revision of the latest change (0: none yet). */
  get rev(): number {
    return this.#rev;
  }

  /** Names in the log. */
  get size(): number {
    return this.#revs.size;
  }

  /** Records a change to `name`; `gone` when it no longer has an entry. */
  touch(name: string, gone = false): void {
    this.#revs.delete(name);
    this.#revs.set(name, ++this.#rev);
    this.#gone.delete(name);
    if (!gone) return;
    this.#gone.add(name);
    while (this.#gone.size > this.#maxGone) {
      const oldest = this.#gone.values().next().value!;
      this.#floor = Math.max(this.#floor, this.#revs.get(oldest)!);
      this.#gone.delete(oldest);
      this.#revs.delete(oldest);
    }
  }

  /** Whether `name`'s last change was that it went away. */
  isGone(name: string): boolean {
    return this.#gone.has(name);
  }

  /**
   * The names changed after revision `since`, oldest change first: at most
   * {@linkcode PAGE_ENTRIES} of them and about {@linkcode PAGE_BYTES} by
   * `size`. From revision 0, or from before what the log remembers, every
   * name it has is a change (and `reset` says so when it had to forget).
   * Runs through the log from its oldest change: cheap next to encoding
   * what it returns.
   */
  page(since: number, size: (name: string) => number): Page {
    // From before what the log remembers, or from a revision it never reached (another log):
    // start afresh.
    const reset = (since > 0 && since < this.#floor) || since > this.#rev;
    // Nothing new (every quiet round of every peer): no walk through the whole log.
    if (!reset && since === this.#rev) return { names: [], rev: since, more: false, reset };
    const from = reset ? 0 : since;
    const names: string[] = [];
    let bytes = 0;
    let rev = from;
    for (const [name, r] of this.#revs) {
      if (r <= from) continue;
      // A fresh start need not hear about names that are gone.
      if (from === 0 && this.#gone.has(name)) {
        rev = r;
        continue;
      }
      const cost = size(name);
      if (names.length > 0 && (names.length >= PAGE_ENTRIES || bytes + cost > PAGE_BYTES)) {
        return { names, rev, more: true, reset };
      }
      names.push(name);
      bytes += cost;
      rev = r;
    }
    return { names, rev: Math.max(rev, this.#rev), more: false, reset };
  }
}
