/**
 * What a peer keeps to itself: the ignore rules. They live in one visible
 * place, a `.p2pignore` file at the root of the shared folder (like
 * Syncthing's `.stignore` or git's `.gitignore`), after a few defaults.
 *
 * The file, one pattern per line:
 * - a blank line, or one starting with `#`, is skipped (`\#` and `\!` start
 *   a pattern with that character);
 * - `*` matches any run of characters except `/`, `?` one character except
 *   `/`; `**` as a whole name matches any number of folders (`**\/x`,
 *   `a/**`, `a/**\/b`); every other character matches itself;
 * - a pattern with no `/` (or only a trailing one) matches a name at any
 *   depth (`*.o`, `build/`); one with a `/` inside matches the path from
 *   the folder's root (`docs/draft.txt`, `/notes.txt`);
 * - a trailing `/` matches folders only;
 * - `!pattern` shares again what an earlier rule ignored;
 * - the last rule that matches decides; a file inside an ignored folder
 *   stays ignored (the folder is not even looked into), as with git.
 *
 * Kept before the file's rules (so `!*.py` undoes one): `*.py`, `*.so` and
 * `*.dll`, which the course's peers never share. Not a rule but always
 * true: hidden names (starting with `.`) are never shared, which covers our
 * temp files, `.p2pignore` itself and the `.p2p-sync/` state folder
 * (`refusalReason` in `files.ts` says so).
 *
 * Ignored means never announced, never served, never fetched, never deleted
 * by sync: the file is this peer's alone.
 *
 * @example
 * ```ts
 * import { IgnoreRules } from "./ignore.ts";
 * const rules = IgnoreRules.parse("build/\n!keep.py\n");
 * rules.ignored("build/x.o")?.reason; // 'rule "build/" in .p2pignore'
 * rules.ignored("tool.py")?.reason; // 'default rule "*.py"'
 * rules.ignored("keep.py"); // null
 * ```
 * @module
 */

/** The ignore file's name, at the root of the shared folder. */
export const IGNORE_FILE = ".p2pignore";

/** The rules kept before the file's: what the course's peers never share. */
export const DEFAULT_PATTERNS = ["*.py", "*.so", "*.dll"] as const;

/** The most of `.p2pignore` that is read: a file of patterns, not a data set. */
export const MAX_IGNORE_FILE_BYTES = 256 * 1024; // bytes

/** One pattern, ready to match. */
interface Rule {
  /** The line as written (for log lines). */
  text: string;
  /** Where the rule comes from: `default`, or {@linkcode IGNORE_FILE}. */
  where: string;
  /** `!pattern`: shares again what an earlier rule ignored. */
  negate: boolean;
  /** A trailing `/`: matches folders only. */
  folderOnly: boolean;
  /** The whole relative path must match this. */
  regex: RegExp;
}

/** What an ignored path matched. */
export interface Ignored {
  /** The path that matched: the path itself, or the ignored folder it is in (with a trailing `/`). */
  path: string;
  /** Why, for a log line: `rule "build/" in .p2pignore` or `default rule "*.py"`. */
  reason: string;
}

/** A set of ignore rules: the defaults, then a `.p2pignore` file's. */
export class IgnoreRules {
  #rules: Rule[];

  private constructor(rules: Rule[]) {
    this.#rules = rules;
  }

  /** The defaults alone: what a folder without `.p2pignore` ignores. */
  static readonly DEFAULT: IgnoreRules = IgnoreRules.parse("");

  /**
   * The defaults, then the rules of `text` (the contents of a `.p2pignore`
   * file), in order.
   *
   * @example
   * ```ts
   * import { IgnoreRules } from "./ignore.ts";
   * IgnoreRules.parse("# build output\n*.o\n").count; // 4 (3 defaults and *.o)
   * ```
   */
  static parse(text: string): IgnoreRules {
    const rules = DEFAULT_PATTERNS.map((p) => compile(p, "default")!);
    for (const line of text.split(/\r?\n/)) {
      const rule = compile(line, IGNORE_FILE);
      if (rule) rules.push(rule);
    }
    return new IgnoreRules(rules);
  }

  /** How many rules there are, the defaults included. */
  get count(): number {
    return this.#rules.length;
  }

  /**
   * Whether `path` (relative, `/` between names) is ignored, looking at the
   * folders it is in first: `build/x.o` is ignored by `build/` even if a
   * later rule says `!*.o`. `null` when it is shared.
   *
   * @example
   * ```ts
   * import { IgnoreRules } from "./ignore.ts";
   * IgnoreRules.parse("tmp/").ignored("a/tmp/b/c.txt")?.path; // "a/tmp/"
   * ```
   */
  ignored(path: string, isFolder = false): Ignored | null {
    const names = path.split("/");
    for (let i = 1; i < names.length; i++) {
      const hit = this.match(names.slice(0, i).join("/"), true);
      if (hit) return hit;
    }
    return this.match(path, isFolder);
  }

  /**
   * Whether `path` itself is ignored, without looking at the folders it is
   * in (a listing that never enters an ignored folder has seen to those).
   * The last rule that matches decides.
   */
  match(path: string, isFolder: boolean): Ignored | null {
    for (let i = this.#rules.length - 1; i >= 0; i--) {
      const rule = this.#rules[i];
      if (rule.folderOnly && !isFolder) continue;
      if (!rule.regex.test(path)) continue;
      if (rule.negate) return null;
      return {
        path: isFolder ? `${path}/` : path,
        reason: rule.where === "default"
          ? `default rule "${rule.text}"`
          : `rule "${rule.text}" in ${rule.where}`,
      };
    }
    return null;
  }
}

/**
 * Turns one line of `.p2pignore` into a rule; `null` for a blank line, a
 * comment, or a pattern with nothing left to match (`/`, `!`).
 */
function compile(line: string, where: string): Rule | null {
  const text = line.trim();
  if (text === "" || text.startsWith("#")) return null;
  let pattern = text;
  const negate = pattern.startsWith("!");
  if (negate) pattern = pattern.slice(1);
  // A leading backslash lets a pattern start with "#" or "!".
  if (pattern.startsWith("\\")) pattern = pattern.slice(1);
  const folderOnly = pattern.endsWith("/");
  pattern = pattern.replace(/\/+$/, "");
  // A "/" left inside (or in front) ties the pattern to the folder's root.
  const anchored = pattern.includes("/");
  pattern = pattern.replace(/^\/+/, "");
  if (pattern === "") return null;
  const body = globToRegex(pattern);
  return {
    text,
    where,
    negate,
    folderOnly,
    regex: new RegExp(`^${anchored ? "" : "(?:.*/)?"}${body}$`),
  };
}

/** A glob (`*`, `?`, `**` as a whole name) as the text of a regular expression. */
function globToRegex(pattern: string): string {
  const names = pattern.split("/");
  let out = "";
  names.forEach((name, i) => {
    const last = i === names.length - 1;
    if (name === "**") {
      // Any number of folders: "**/x" and "a/**/b" (zero or more), "a/**" (anything inside).
      out += last ? (i === 0 ? ".*" : ".+") : "(?:.*/)?";
      return;
    }
    for (const c of name) {
      out += c === "*" ? "[^/]*" : c === "?" ? "[^/]" : c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    }
    if (!last) out += "/";
  });
  return out;
}

/**
 * The once-per-name log line for an ignored path, and the key under which
 * it is remembered as said (the listing and the plan share the set).
 *
 * @example
 * ```ts
 * import { ignoreNote } from "./ignore.ts";
 * ignoreNote({ path: "build/", reason: 'rule "build/" in .p2pignore' }).line;
 * // 'ignoring build/ (rule "build/" in .p2pignore)'
 * ```
 */
export function ignoreNote(ignored: Ignored): { key: string; line: string } {
  return {
    key: `ignore\n${ignored.path}\n${ignored.reason}`,
    line: `ignoring ${ignored.path} (${ignored.reason})`,
  };
}

/** What {@linkcode IgnoreFile.read} found. */
export interface IgnoreState {
  /** The rules in force. */
  rules: IgnoreRules;
  /** Whether they differ from the last read (the first read counts as a change). */
  changed: boolean;
  /** What was wrong with the file, for a log line; `null` when nothing was. */
  problem: string | null;
}

/**
 * A folder's `.p2pignore`, read again only when it changed (its size,
 * mtime, ctime or inode), so a peer can ask for the rules every round and
 * the file server on every request.
 *
 * @example
 * ```ts
 * import { IgnoreFile } from "./ignore.ts";
 * const file = new IgnoreFile(await Deno.realPath("."));
 * const { rules } = await file.read();
 * rules.ignored("setup.py") !== null; // true, unless .p2pignore says "!*.py"
 * ```
 */
export class IgnoreFile {
  #path: string;
  #key: string | null = null;
  #state: { rules: IgnoreRules; problem: string | null } = {
    rules: IgnoreRules.DEFAULT,
    problem: null,
  };

  /** The ignore file of the shared folder `dir` (a real path). */
  constructor(dir: string) {
    this.#path = `${dir.replace(/\/+$/, "")}/${IGNORE_FILE}`;
  }

  /**
   * The rules now. No file means the defaults; a file that cannot be read,
   * or is not a plain file (a symlink is not followed), means the defaults
   * too, with the problem said.
   */
  async read(): Promise<IgnoreState> {
    let info: Deno.FileInfo | null = null;
    let problem: string | null = null;
    try {
      // Sync: every request a peer serves looks here, and an async lstat's trip to a worker
      // thread costs more than the lstat itself.
      info = Deno.lstatSync(this.#path);
      if (!info.isFile) problem = `${IGNORE_FILE} is not a plain file: only the defaults apply`;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        problem = `cannot read ${IGNORE_FILE} (${(err as Error).message}): only the defaults apply`;
      }
    }
    const key = info === null
      ? "none"
      : `${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}:${info.ino}`;
    if (key === this.#key && problem === this.#state.problem) {
      return { ...this.#state, changed: false };
    }
    let rules = IgnoreRules.DEFAULT;
    if (info !== null && problem === null) {
      try {
        const text = await readStart(this.#path, MAX_IGNORE_FILE_BYTES);
        if (info.size > MAX_IGNORE_FILE_BYTES) {
          problem = `${IGNORE_FILE} is larger than ${MAX_IGNORE_FILE_BYTES} bytes: ` +
            "only the rules in its beginning apply";
        }
        rules = IgnoreRules.parse(text);
      } catch (err) {
        problem = `cannot read ${IGNORE_FILE} (${(err as Error).message}): only the defaults apply`;
      }
    }
    this.#key = key;
    this.#state = { rules, problem };
    return { ...this.#state, changed: true };
  }
}

/** The first `max` bytes of a file as text (a cut line at the end is dropped). */
async function readStart(path: string, max: number): Promise<string> {
  using file = await Deno.open(path, { read: true });
  const buffer = new Uint8Array(max);
  let filled = 0;
  while (filled < max) {
    const n = await file.read(buffer.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  const text = new TextDecoder().decode(buffer.subarray(0, filled));
  return filled === max ? text.slice(0, Math.max(0, text.lastIndexOf("\n"))) : text;
}
