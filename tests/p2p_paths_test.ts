/**
 * Subfolders and ignore rules (issue 9, item 5): the "paths" extension and
 * `.p2pignore`. Pure tests first (the path rules, Windows names, the ignore
 * matcher, the tracker's and the plan's gates), then real peers: subfolders
 * three deep sync both ways and their folders are made; a `.p2pignore` rule
 * keeps a folder local and `*.py` travels only after `!*.py`; our peer sends
 * a name with `/` only to a tracker that accepted "paths"; hostile paths from
 * a directory are never written; the file server serves paths with the
 * listing's checks.
 */

import assert from "node:assert/strict";
import { preview } from "../lib/log.ts";
import { writeAll } from "../lib/net.ts";
import {
  isTempName,
  listSharedFiles,
  refusalReason,
  removeStaleTempFiles,
  tempNameFor,
} from "../p2p/files.ts";
import { ignoreNote, IgnoreRules } from "../p2p/ignore.ts";
import { planDownloads, planVersions } from "../p2p/plan.ts";
import { startPeer } from "../p2p/peer.ts";
import {
  encodeJson,
  FEATURES,
  isSafePath,
  MAX_PATH_BYTES,
  MAX_PATH_DEPTH,
  parseTrackerReply,
  pathProblem,
  windowsNameProblem,
} from "../p2p/protocol.ts";
import { type Link, type Now, TrackerState } from "../p2p/tracker_state.ts";
import { STATE_DIR } from "../p2p/sync_state.ts";
import { concat, readAll, sha256, withTimeout } from "./helpers.ts";
import {
  fakeHolder,
  fakeTracker,
  folderTree,
  holderReply,
  putFile,
  type Seen,
  startPeerScript,
  startTrackerScript,
  tempFolder,
  waitUntil,
} from "./p2p_helpers.ts";

const T0 = 1_700_000_000; // a fixed mtime, in seconds
const encoder = new TextEncoder();
const A = "a".repeat(64);
const B = "b".repeat(64);

// ---------------------------------------------------------------------------
// Pure: the rules.

Deno.test("pathProblem(): relative paths of safe names, bounded in length and depth", () => {
  const deepest = Array.from({ length: MAX_PATH_DEPTH }, (_, i) => `d${i}`).join("/");
  // 15 names of 255 bytes, one of 200 and one of 55, and 16 slashes: 4096 bytes.
  const longest = [...Array(15).fill("a".repeat(255)), "b".repeat(200), "c".repeat(55)].join("/");
  assert.equal(encoder.encode(longest).length, MAX_PATH_BYTES);
  for (const good of ["a.txt", "a/b/c.txt", "ünï/cødé €.txt", "a..b/..c", deepest, longest]) {
    assert.equal(pathProblem(good), null, good.slice(0, 40));
    assert.ok(isSafePath(good));
  }
  const bad: [string, RegExp][] = [
    ["", /empty name/],
    ["/etc/passwd", /absolute/],
    ["a//b", /empty name in the path/],
    ["a/", /a folder, not a file/],
    ["./a", /"\." is not allowed/],
    ["a/./b", /"\." is not allowed/],
    ["a/../b", /"\.\." is not allowed/],
    ["..", /"\.\." is not allowed/],
    ["a\\b/c", /backslashes/],
    ["a/b\u0000c", /control characters/],
    ["a/b\nc", /control characters/],
    [`a/${"x".repeat(256)}`, /name longer than 255 bytes/],
    [longest + "b", /path longer than 4096 bytes/],
    [deepest + "/x", /deeper than 64/],
    ["a/\ud800", /broken Unicode/],
  ];
  for (const [path, reason] of bad) {
    assert.match(pathProblem(path) ?? "(none)", reason, JSON.stringify(path.slice(0, 40)));
    assert.ok(!isSafePath(path));
  }
});

Deno.test("refusalReason(): hidden names anywhere, `/` only with paths, Windows names only on Windows", () => {
  assert.equal(refusalReason("docs/a.txt"), null);
  assert.equal(refusalReason("docs/a.txt", { paths: false }), "path separators are not allowed");
  for (const hidden of [".git/config", "a/.cache/b", "a/.x.txt.0123456789ab.part", STATE_DIR]) {
    assert.match(refusalReason(hidden) ?? "", /hidden/, hidden);
  }
  // The course's *.py is an ignore rule now, not a refusal: ".p2pignore" can undo it.
  assert.equal(refusalReason("tool.py"), null);
  const special = ["CON", "nul.txt", "logs/AUX", "Com1.log", "LPT9.tar.gz", "x.", "a/b ", "a<b"];
  for (const name of special) {
    assert.equal(refusalReason(name, { windows: false }), null, name);
    assert.match(refusalReason(name, { windows: true }) ?? "", /Windows/, name);
    assert.notEqual(windowsNameProblem(name), null, name);
  }
  for (const fine of ["console.txt", "com10", "lpt.txt", "a.b/c d.txt", "nul-ish"]) {
    assert.equal(windowsNameProblem(fine), null, fine);
  }
  assert.match(tempNameFor("a/b/c.txt"), /^a\/b\/\.c\.txt\.[0-9a-f]{12}\.part$/);
  assert.ok(isTempName(tempNameFor("a/b/c.txt").split("/").pop()!));
});

Deno.test("IgnoreRules: defaults, globs, folders, anchoring, negation, last rule wins", () => {
  const rules = IgnoreRules.parse([
    "# build output",
    "",
    "build/",
    "*.o",
    "!keep.o",
    "/top.txt",
    "docs/*.tmp",
    "**/cache/**",
    "a/**/z",
    "?.log",
    "!*.py",
    "secret.py",
    "\\#literal",
    "  spaced.txt  ",
  ].join("\r\n"));
  const cases: [string, string | null][] = [
    ["build/x.c", 'rule "build/" in .p2pignore'],
    ["src/build/deep/x.c", 'rule "build/" in .p2pignore'],
    ["build", null], // a file named build: the rule is for folders
    ["x.o", 'rule "*.o" in .p2pignore'],
    ["sub/x.o", 'rule "*.o" in .p2pignore'],
    ["keep.o", null],
    ["top.txt", 'rule "/top.txt" in .p2pignore'],
    ["sub/top.txt", null],
    ["docs/a.tmp", 'rule "docs/*.tmp" in .p2pignore'],
    ["docs/sub/a.tmp", null],
    ["cache/x", 'rule "**/cache/**" in .p2pignore'],
    ["a/b/cache/x/y", 'rule "**/cache/**" in .p2pignore'],
    ["a/z", 'rule "a/**/z" in .p2pignore'],
    ["a/b/c/z", 'rule "a/**/z" in .p2pignore'],
    ["b/a/z", null],
    ["x.log", 'rule "?.log" in .p2pignore'],
    ["xy.log", null],
    ["tool.py", null], // the default *.py, undone by !*.py
    ["secret.py", 'rule "secret.py" in .p2pignore'],
    ["lib.so", 'default rule "*.so"'],
    ["win/x.dll", 'default rule "*.dll"'],
    ["#literal", 'rule "\\#literal" in .p2pignore'],
    ["spaced.txt", 'rule "spaced.txt" in .p2pignore'],
    ["notes.txt", null],
  ];
  for (const [path, reason] of cases) {
    assert.equal(rules.ignored(path)?.reason ?? null, reason, path);
  }
  // An ignored folder is named once for everything in it; nothing inside can be shared again.
  assert.equal(IgnoreRules.parse("build/\n!build/keep.c").ignored("build/keep.c")?.path, "build/");
  assert.deepEqual(ignoreNote(rules.ignored("src/build/deep/x.c")!), {
    key: 'ignore\nsrc/build/\nrule "build/" in .p2pignore',
    line: 'ignoring src/build/ (rule "build/" in .p2pignore)',
  });
  assert.equal(IgnoreRules.DEFAULT.ignored("peer.py")?.reason, 'default rule "*.py"');
  assert.equal(IgnoreRules.parse("#\n!\n/\n").count, IgnoreRules.DEFAULT.count);
});

// ---------------------------------------------------------------------------
// Pure: the tracker's and the plan's gates.

function at(ms: number): Now {
  return { wall: 1_800_000_000_000 + ms, mono: ms };
}

function link(ip: string): Link {
  return { ip, lastFiles: null };
}

function file(name: string, sha: string) {
  return { name, mtime: T0, size: 3, sha256: sha, by: "PEERONE" };
}

Deno.test('TrackerState: names with "/" only from and to connections that asked for "paths"', () => {
  const state = new TrackerState({ peerTimeoutMs: 180_000, quiet: true });
  const both = [...FEATURES];
  const ours = link("10.0.0.2");
  const said = state.apply(ours, {
    port: 8001,
    id: "PEERONE",
    features: both,
    files: [file("sub/deep/a.txt", A), file("top.txt", B), file("x/../y.txt", A)],
  }, at(0));
  assert.match(
    said[0],
    /joined with 2 files .*features: versions, paths.*ignored unsafe names "x\/\.\.\/y\.txt"/,
  );
  // A peer that asked for "versions" alone may not send one.
  const older = link("10.0.0.3");
  state.apply(older, {
    port: 8001,
    id: "PEERTWO",
    features: ["versions"],
    files: [file("sub/b.txt", B)],
  }, at(1));
  assert.equal(state.counters.unsafeNames, 2);
  const names = (features?: string[]) =>
    Object.keys(
      parseTrackerReply(new TextDecoder().decode(concat(state.encodedDirectory(features).parts)))
        .directory,
    );
  assert.deepEqual(names(both), ["sub/deep/a.txt", "top.txt"]);
  assert.deepEqual(names(["versions"]), ["top.txt"]);
  assert.deepEqual(names(undefined), ["top.txt"], "the course's view never has a path");
  assert.ok(!encodeJson(state.directory()).includes("sub/"));
  // A deletion of a path, from a peer with "paths": the tombstone reaches "paths" peers only.
  state.apply(ours, {
    port: 8001,
    files: [file("top.txt", B)],
    deleted: [{ name: "sub/deep/a.txt", sha256: A, time: 1_800_000_000 }],
  }, at(2));
  const reply = parseTrackerReply(
    new TextDecoder().decode(concat(state.encodedDirectory(both).parts)),
  );
  assert.equal(reply.deleted["sub/deep/a.txt"]?.sha256, A);
  const course = parseTrackerReply(
    new TextDecoder().decode(concat(state.encodedDirectory(["versions"]).parts)),
  );
  assert.deepEqual(Object.keys(course.deleted), []);
});

Deno.test("plans: paths only when the tracker accepted them, never an ignored one, once per ignored folder", () => {
  const entry = { ip: "10.0.0.2", port: 8001, mtime: T0 };
  const directory = {
    "docs/a.txt": entry,
    "build/x.o": entry,
    "build/y.o": entry,
    "src/tool.py": entry,
    "a/../b.txt": entry,
    "top.txt": entry,
  };
  const base = {
    directory,
    local: new Map<string, number>(),
    self: undefined,
    inFlight: new Set<string>(),
    queued: new Set<string>(),
    badHolders: new Map<string, number>(),
    warned: new Set<string>(),
    now: 0,
  };
  // The course's tracker passes any name on: a path is skipped.
  const course = planDownloads(base);
  assert.deepEqual([...course.fetch.keys()], ["top.txt"]);
  assert.ok(course.log.includes('skipping "docs/a.txt": path separators are not allowed'));
  const ignore = IgnoreRules.parse("build/\n");
  const plan = planDownloads({ ...base, paths: true, ignore });
  assert.deepEqual([...plan.fetch.keys()], ["docs/a.txt", "top.txt"]);
  assert.deepEqual(plan.log.filter((l) => !l.startsWith("fetching")), [
    'ignoring build/ (rule "build/" in .p2pignore)',
    'ignoring src/tool.py (default rule "*.py")',
    'skipping "a/../b.txt": ".." is not allowed in a path',
  ]);
  // Said once: the next round has nothing new to say.
  const again = planDownloads({ ...base, paths: true, ignore, warned: new Set(plan.warned) });
  assert.deepEqual(again.log.filter((l) => !l.startsWith("fetching")), []);
  // With "!*.py" the course's default is undone.
  const py = planDownloads({ ...base, paths: true, ignore: IgnoreRules.parse("!*.py") });
  assert.ok(py.fetch.has("src/tool.py"));

  // Never deleted by sync: a tombstone for an ignored path leaves the copy here alone.
  const versions = {
    ...base,
    directory: {},
    deleted: {
      "build/x.o": { sha256: A, history: [], time: T0, by: "PEERTWO" },
      "docs/a.txt": { sha256: A, history: [], time: T0, by: "PEERTWO" },
    },
    local: new Map([["build/x.o", { sha256: A, mtime: T0 }], ["docs/a.txt", {
      sha256: A,
      mtime: T0,
    }]]),
    recorded: new Map(),
    deletedHere: new Map(),
    paths: true,
    ignore,
  };
  assert.deepEqual(planVersions(versions).deletes.map((d) => d.path), ["docs/a.txt"]);
});

Deno.test("listSharedFiles() walks subfolders, skips hidden and symlinked folders and ignored names; temp files go from every folder", async () => {
  await using outside = await tempFolder();
  await using share = await tempFolder();
  const dir = share.path;
  for (const path of ["a/b/c/deep.txt", "a/top.txt", "build/x.o", "src/tool.py", ".git/config"]) {
    await Deno.mkdir(`${dir}/${path}`.replace(/\/[^/]*$/, ""), { recursive: true });
    await putFile(dir, path, encoder.encode(path), T0);
  }
  await putFile(outside.path, "secret.txt", encoder.encode("secret"), T0);
  await Deno.symlink(outside.path, `${dir}/outlink`);
  await Deno.symlink(`${dir}/a`, `${dir}/inlink`);
  await Deno.writeTextFile(`${dir}/.p2pignore`, "build/\n");
  await Deno.writeTextFile(`${dir}/a/b/.deep.txt.0123456789ab.part`, "torn");
  await Deno.writeTextFile(`${dir}/.top.0123456789ab.part`, "torn");
  const skips: string[] = [];
  const files = await listSharedFiles(dir, undefined, {
    ignore: IgnoreRules.parse("build/\n"),
    onSkip: (s) => skips.push(`${s.path}: ${s.reason}`),
  });
  assert.deepEqual(files.map((f) => f.name), ["a/b/c/deep.txt", "a/top.txt"]);
  assert.equal(files[0].sha256, sha256(encoder.encode("a/b/c/deep.txt")));
  assert.deepEqual(skips.sort(), [
    'build/: rule "build/" in .p2pignore',
    "inlink/: a symlinked folder is not followed",
    "outlink/: a symlinked folder is not followed",
    'src/tool.py: default rule "*.py"',
  ]);
  assert.deepEqual((await removeStaleTempFiles(dir)).sort(), [
    ".top.0123456789ab.part",
    "a/b/.deep.txt.0123456789ab.part",
  ]);
});

// ---------------------------------------------------------------------------
// Real peers.

function sorted(state: Record<string, Seen>): string {
  return JSON.stringify(Object.entries(state).sort(([a], [b]) => (a < b ? -1 : 1)));
}

async function put(dir: string, path: string, text: string, mtime: number): Promise<void> {
  const slash = path.lastIndexOf("/");
  if (slash > 0) await Deno.mkdir(`${dir}/${path.slice(0, slash)}`, { recursive: true });
  await putFile(dir, path, encoder.encode(text), mtime);
}

Deno.test("subfolders three deep sync both ways between two real peers, folders made as needed", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  await put(a.path, "top.txt", "top\n", T0);
  await put(a.path, "a/b/c/deep.txt", "deep\n", T0 + 1);
  await put(a.path, "a/b/side.txt", "side\n", T0 + 2);
  await put(b.path, "x/y/z/other.txt", "other\n", T0 + 3);
  await put(b.path, "a/b/c/mine.txt", "mine\n", T0 + 4); // a folder both have
  await using tracker = await startTrackerScript(["--quiet"]);
  await using pa = await startPeerScript(a.path, tracker.port);
  await using pb = await startPeerScript(b.path, tracker.port);
  const logs = () => [pa, pb].map((p) => p.lines.join("\n")).join("\n---\n");
  const same = async (count: number) => {
    const [ta, tb] = await Promise.all([folderTree(a.path), folderTree(b.path)]);
    return Object.keys(ta).length === count && sorted(ta) === sorted(tb);
  };
  await waitUntil(() => same(5), 15_000, "both folders with all five files", logs);
  assert.equal((await folderTree(b.path))["a/b/c/deep.txt"]?.mtime, T0 + 1);
  assert.ok((await Deno.stat(`${a.path}/x/y/z`)).isDirectory);
  assert.ok(pb.lines.some((l) => /fetching a\/b\/c\/deep\.txt \(missing here\)/.test(l)), logs());
  // An edit deep down goes the other way; a deletion deep down reaches the other peer.
  await put(b.path, "a/b/c/deep.txt", "deep, edited on b\n", T0 + 100);
  await Deno.remove(`${a.path}/a/b/side.txt`);
  await waitUntil(
    async () => {
      const [ta, tb] = await Promise.all([folderTree(a.path), folderTree(b.path)]);
      return sorted(ta) === sorted(tb) && ta["a/b/c/deep.txt"]?.mtime === T0 + 100 &&
        ta["a/b/side.txt"] === undefined;
    },
    15_000,
    "the edit on a, the deletion on b",
    logs,
  );
});

Deno.test("ignore rules: a .p2pignore folder stays local, *.py travels only after !*.py, an ignored file is never deleted by sync", async () => {
  await using a = await tempFolder();
  await using b = await tempFolder();
  await Deno.writeTextFile(`${a.path}/.p2pignore`, "# the compiler's output\nbuild/\n");
  await put(a.path, "build/out.o", "object\n", T0);
  await put(a.path, "build/sub/x.txt", "generated\n", T0);
  await put(a.path, "src/tool.py", "print(1)\n", T0);
  await put(a.path, "src/main.c", "int main;\n", T0);
  await put(a.path, "notes/n.txt", "note\n", T0);
  await using tracker = await startTrackerScript(["--quiet"]);
  await using pa = await startPeerScript(a.path, tracker.port);
  await using pb = await startPeerScript(b.path, tracker.port);
  const logs = () => [pa, pb].map((p) => p.lines.join("\n")).join("\n---\n");
  const at = async (dir: string, path: string) => (await folderTree(dir))[path] !== undefined;
  await waitUntil(
    async () => (await at(b.path, "src/main.c")) && (await at(b.path, "notes/n.txt")),
    15_000,
    "src/main.c and notes/n.txt on b",
    logs,
  );
  // A later file as a barrier: the rounds that brought it would have brought the rest.
  await put(a.path, "barrier1.txt", "1\n", T0);
  await waitUntil(() => at(b.path, "barrier1.txt"), 15_000, "barrier1.txt on b", logs);
  assert.deepEqual(Object.keys(await folderTree(b.path)).sort(), [
    "barrier1.txt",
    "notes/n.txt",
    "src/main.c",
  ]);
  const once = (line: string) => pa.lines.filter((l) => l.includes(line)).length;
  assert.equal(once('ignoring build/ (rule "build/" in .p2pignore)'), 1, logs());
  assert.equal(once('ignoring src/tool.py (default rule "*.py")'), 1, logs());

  // Both undo the course's default: tool.py travels; build/ still does not.
  await Deno.writeTextFile(`${a.path}/.p2pignore`, "build/\n!*.py\n");
  await Deno.writeTextFile(`${b.path}/.p2pignore`, "!*.py\n");
  await waitUntil(() => at(b.path, "src/tool.py"), 15_000, "src/tool.py on b", logs);
  assert.ok(!(await at(b.path, "build/out.o")));

  // b keeps notes/ to itself: a's deletion of notes/n.txt does not reach b's copy.
  await Deno.writeTextFile(`${b.path}/.p2pignore`, "!*.py\nnotes/\n");
  await waitUntil(
    () => pb.lines.some((l) => l.includes('ignoring notes/ (rule "notes/" in .p2pignore)')),
    15_000,
    "b ignoring notes/",
    logs,
  );
  await Deno.remove(`${a.path}/notes/n.txt`);
  await waitUntil(
    () => pa.lines.some((l) => l.includes("deleted here: notes/n.txt")),
    15_000,
    "a telling the deletion",
    logs,
  );
  // A later file as a barrier: the directory that brought it had the deletion too, and b
  // carries out a round's deletions before that round's downloads.
  await put(a.path, "barrier2.txt", "2\n", T0);
  await waitUntil(() => at(b.path, "barrier2.txt"), 15_000, "barrier2.txt on b", logs);
  assert.ok(await at(b.path, "notes/n.txt"), logs());
  assert.ok(!pb.lines.some((l) => l.includes("deleted notes/n.txt")), logs());
});

/** The names a message carried, in `files` and `deleted`. */
function namesSent(message: Record<string, unknown>): string[] {
  const listed = [message.files, message.deleted].flatMap((list) =>
    (list ?? []) as { name: string }[]
  );
  return listed.map((f) => f.name);
}

Deno.test('our peer sends a name with "/" only after the tracker accepted "paths", never in an Init', async () => {
  await using share = await tempFolder();
  await put(share.path, "top.txt", "top\n", T0);
  await put(share.path, "sub/a.txt", "a\n", T0);
  const replies = [
    "{}", // the course's tracker
    '{"/": {"features": ["versions"]}}', // a tracker without "paths"
    '{"/": {"features": ["versions", "paths"]}}',
  ];
  for (const answer of replies) {
    const tracker = fakeTracker(() => answer);
    try {
      await using _peer = await startPeer({
        dir: share.path,
        tracker: { hostname: "127.0.0.1", port: tracker.port },
        interval: 0.1,
        log: () => {},
      });
      await waitUntil(() => tracker.messages.flat().length >= 5, 10_000, "five messages");
    } finally {
      await tracker.close();
    }
    const [init, ...rest] = tracker.messages.flat();
    assert.deepEqual(namesSent(init), ["top.txt"], answer);
    const later = rest.flatMap(namesSent);
    if (answer.includes("paths")) assert.ok(later.includes("sub/a.txt"), JSON.stringify(rest));
    else assert.ok(!later.some((n) => n.includes("/")), `${answer}: ${JSON.stringify(rest)}`);
  }
});

Deno.test("hostile paths from a directory are skipped or refused, and nothing is written outside the folder", async () => {
  await using parent = await tempFolder();
  const dir = `${parent.path}/share`;
  const outside = `${parent.path}/outside`;
  await Deno.mkdir(dir);
  await Deno.mkdir(outside);
  await Deno.symlink(outside, `${dir}/link`);
  await putFile(dir, "afile", encoder.encode("a plain file\n"), T0);
  const content = encoder.encode("written by a hostile holder\n");
  const holder = fakeHolder((_name, conn) => writeAll(conn, holderReply(content)));
  const entry = { ip: "127.0.0.1", port: holder.port, mtime: T0 };
  const hostile = [
    "../escape.txt",
    "a/../../escape.txt",
    "/abs.txt",
    "sub//x.txt",
    "sub/./x.txt",
    ".git/config",
    "sub/.hidden/x.txt",
    "back\\slash/x.txt",
    `${"x".repeat(256)}/y.txt`,
    Array.from({ length: MAX_PATH_DEPTH + 1 }, () => "d").join("/"),
  ];
  const directory: Record<string, unknown> = {
    "/": { features: ["versions", "paths"] },
    ...Object.fromEntries([...hostile, "link/evil.txt", "afile/x.txt", "ok/dir/deep/good.txt"].map(
      (name) => [name, entry],
    )),
  };
  const tracker = fakeTracker(() => encodeJson(directory));
  const lines: string[] = [];
  try {
    await using _peer = await startPeer({
      dir,
      tracker: { hostname: "127.0.0.1", port: tracker.port },
      interval: 0.1,
      log: (line) => lines.push(line),
    });
    await waitUntil(
      async () => (await folderTree(dir))["ok/dir/deep/good.txt"] !== undefined,
      10_000,
      "ok/dir/deep/good.txt",
      () => lines.join("\n"),
    );
    await waitUntil(
      () =>
        lines.some((l) =>
          /cannot fetch afile\/x\.txt .*afile is a file here, not a folder/.test(l)
        ),
      10_000,
      "the refusal of afile/x.txt",
      () => lines.join("\n"),
    );
    await waitUntil(() => tracker.messages.flat().length >= 8, 10_000, "more rounds");
  } finally {
    await tracker.close();
    await holder.close();
  }
  assert.deepEqual([...Deno.readDirSync(outside)], [], "nothing written through the symlink");
  assert.deepEqual([...Deno.readDirSync(parent.path)].map((e) => e.name).sort(), [
    "outside",
    "share",
  ]);
  assert.deepEqual(Object.keys(await folderTree(dir)).sort(), ["afile", "ok/dir/deep/good.txt"]);
  assert.deepEqual(holder.requests, ["ok/dir/deep/good.txt"]);
  assert.ok(
    lines.some((l) => /cannot fetch link\/evil\.txt .*link is a symlink here/.test(l)),
    lines.join("\n"),
  );
  for (const name of hostile) {
    assert.equal(
      lines.filter((l) => l.includes(`skipping ${preview(encoder.encode(name))}:`)).length,
      1,
      `one skip line for ${name.slice(0, 30)}:\n${lines.join("\n")}`,
    );
  }
});

/** What a file server sends for one request line, until it closes. */
async function request(port: number, line: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, encoder.encode(line + "\n"));
    return new TextDecoder().decode(await withTimeout(readAll(conn), 5000, line));
  } catch {
    return "";
  } finally {
    conn.close();
  }
}

Deno.test("the file server serves paths with the listing's checks: no symlinked folder, nothing hidden or ignored", async () => {
  await using outside = await tempFolder();
  await using share = await tempFolder();
  const dir = share.path;
  await put(dir, "sub/inner.txt", "inner\n", T0);
  await put(dir, "sub/.hidden", "hidden\n", T0);
  await put(dir, "build/x.o", "object\n", T0);
  await put(dir, "top.txt", "top\n", T0);
  await put(outside.path, "secret.txt", "secret\n", T0);
  await Deno.writeTextFile(`${dir}/.p2pignore`, "build/\n");
  await Deno.symlink(`${dir}/sub`, `${dir}/linkdir`);
  await Deno.symlink(`${outside.path}/secret.txt`, `${dir}/sub/out.txt`);
  await Deno.symlink(`${dir}/top.txt`, `${dir}/sub/alias.txt`);
  await Deno.symlink(`${dir}/build/x.o`, `${dir}/sub/to_ignored.txt`);
  const tracker = fakeTracker(() => "{}");
  const lines: string[] = [];
  try {
    await using peer = await startPeer({
      dir,
      tracker: { hostname: "127.0.0.1", port: tracker.port },
      log: (line) => lines.push(line),
    });
    const port = peer.addr.port;
    assert.equal(await request(port, "sub/inner.txt"), "Content-Length: 6\ninner\n");
    assert.equal(await request(port, "sub/alias.txt"), "Content-Length: 4\ntop\n");
    const refused: [string, RegExp][] = [
      ["linkdir/inner.txt", /a folder on its path is a symlink/],
      ["sub/out.txt", /symlink leads out of the shared folder/],
      ["sub/to_ignored.txt", /symlink leads to a file that is not shared/],
      ["build/x.o", /ignored here \(rule "build\/" in \.p2pignore\)/],
      ["sub/.hidden", /hidden/],
      ["sub/../top.txt", /"\.\." is not allowed/],
      [".p2pignore", /hidden/],
    ];
    for (const [path, reason] of refused) {
      assert.equal(await request(port, path), "", path);
      assert.ok(
        lines.some((l) => l.includes(JSON.stringify(path)) && reason.test(l)),
        `${path}:\n${lines.join("\n")}`,
      );
    }
    // The rules are read again when .p2pignore changes: build/ is served once it is no longer ignored.
    await Deno.writeTextFile(`${dir}/.p2pignore`, "# nothing\n");
    assert.equal(await request(port, "build/x.o"), "Content-Length: 7\nobject\n");
  } finally {
    await tracker.close();
  }
});
