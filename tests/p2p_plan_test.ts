/**
 * The peer's planning rules (`p2p/plan.ts`), case by case without sockets:
 * what a peer fetches from a directory, from whom and in which order, and
 * what it skips and reports once. Each case builds the plain data a round
 * hands the plan and checks the decisions.
 */

import assert from "node:assert/strict";
import {
  BAD_HOLDER_MS,
  holdersInOrder,
  localVersions,
  planDownloads,
  type PlanInput,
  planVersions,
  sourceAddr,
  sourceName,
  type VersionsPlanInput,
} from "../p2p/plan.ts";
import { type Directory, type DirectoryEntry, MAX_MTIME_SECONDS } from "../p2p/protocol.ts";

const MTIME = 1_700_000_000; // seconds: an ordinary file time
const NOW = 1_800_000_000_000; // ms: the plan's `now`
const SELF = "10.0.0.9:8000";

/** A directory entry held by `ip:8001`, with more holders of the same version after it. */
function entry(ip: string, mtime = MTIME, others: string[] = []): DirectoryEntry {
  return {
    ip,
    port: 8001,
    mtime,
    holders: [ip, ...others].map((h) => ({ ip: h, port: 8001, mtime })),
  };
}

/** A plan input: an empty peer (no files, nothing remembered) unless `over` says otherwise. */
function input(directory: Directory, over: Partial<PlanInput> = {}): PlanInput {
  return {
    directory,
    local: new Map(),
    self: SELF,
    inFlight: new Set(),
    queued: new Set(),
    badHolders: new Map(),
    warned: new Set(),
    now: NOW,
    ...over,
  };
}

Deno.test("planDownloads() fetches a file missing here from its holder and says so", () => {
  const plan = planDownloads(input({ "a.txt": entry("10.0.0.2") }));
  assert.deepEqual([...plan.fetch.keys()], ["a.txt"]);
  const wanted = plan.fetch.get("a.txt")!;
  assert.equal(wanted.localMtime, null);
  assert.deepEqual(wanted.sources, [{ ip: "10.0.0.2", port: 8001 }]);
  assert.deepEqual(plan.log, ["fetching a.txt (missing here) from 10.0.0.2:8001"]);
  assert.deepEqual(plan.skipped, []);
});

Deno.test("planDownloads() fetches only a strictly newer mtime, in whole seconds", () => {
  const directory = {
    "newer.txt": entry("10.0.0.2", MTIME + 5),
    "same.txt": entry("10.0.0.2", MTIME),
    "older.txt": entry("10.0.0.2", MTIME - 5),
    "fraction.txt": entry("10.0.0.2", MTIME + 0.9),
  };
  const local = new Map(Object.keys(directory).map((name) => [name, MTIME]));
  const plan = planDownloads(input(directory, { local }));
  assert.deepEqual([...plan.fetch.keys()], ["newer.txt"]);
  assert.equal(plan.fetch.get("newer.txt")!.localMtime, MTIME);
  assert.deepEqual(plan.log, [
    `fetching newer.txt (newer there (mtime ${MTIME + 5} > ${MTIME})) from 10.0.0.2:8001`,
  ]);
});

Deno.test("planDownloads() never fetches from this peer's own address", () => {
  const plan = planDownloads(input({
    "mine.txt": entry("10.0.0.9"),
    "both.txt": { ...entry("10.0.0.9", MTIME, ["10.0.0.2"]), port: 8000 },
  }, { self: "10.0.0.9:8001" }));
  // mine.txt is held only by us: nothing to do, nothing to say.
  assert.deepEqual([...plan.fetch.keys()], ["both.txt"]);
  assert.deepEqual(plan.fetch.get("both.txt")!.sources, [
    { ip: "10.0.0.9", port: 8000 },
    { ip: "10.0.0.2", port: 8001 },
  ]);
});

Deno.test("planDownloads() skips names that are not plain shared files, and says so once", () => {
  const directory = {
    "../etc/passwd": entry("10.0.0.2"),
    ".hidden": entry("10.0.0.2"),
    "peer.py": entry("10.0.0.2"),
    "a\u0000b": entry("10.0.0.2"),
    "ok.txt": entry("10.0.0.2"),
  };
  const first = planDownloads(input(directory));
  assert.deepEqual([...first.fetch.keys()], ["ok.txt"]);
  assert.deepEqual(first.skipped.map((s) => s.name), [
    "../etc/passwd",
    ".hidden",
    "peer.py",
    "a\u0000b",
  ]);
  assert.equal(first.warned.length, 4);
  // The course's *.py is an ignore rule now (".p2pignore" can undo it): said as one.
  assert.equal(first.log.filter((line) => line.startsWith("skipping ")).length, 3);
  assert.ok(first.log.includes('ignoring peer.py (default rule "*.py")'), first.log.join("\n"));
  assert.match(first.log[0], /^skipping "\.\.\/etc\/passwd": path separators/);
  assert.ok(!first.log.some((line) => line.includes("\u0000")), "names are escaped in the log");

  // The next round: the same skips, nothing new to report.
  const second = planDownloads(input(directory, { warned: new Set(first.warned) }));
  assert.equal(second.skipped.length, 4);
  assert.deepEqual(second.warned, []);
  assert.deepEqual(second.log, ["fetching ok.txt (missing here) from 10.0.0.2:8001"]);
});

Deno.test("planDownloads() skips an mtime past 2106 but takes one at the bound", () => {
  const plan = planDownloads(input({
    "far.txt": entry("10.0.0.2", MAX_MTIME_SECONDS + 1),
    "edge.txt": entry("10.0.0.2", MAX_MTIME_SECONDS),
  }));
  assert.deepEqual([...plan.fetch.keys()], ["edge.txt"]);
  assert.deepEqual(plan.skipped, [{
    name: "far.txt",
    reason: `mtime ${MAX_MTIME_SECONDS + 1} is past ${MAX_MTIME_SECONDS} (the year 2106)`,
  }]);
});

Deno.test("planDownloads() leaves a download in flight alone and does not repeat a queued one", () => {
  const directory = { "busy.txt": entry("10.0.0.2"), "queued.txt": entry("10.0.0.2") };
  const plan = planDownloads(input(directory, {
    inFlight: new Set(["busy.txt"]),
    queued: new Set(["queued.txt"]),
  }));
  // Still queued (the plan is the whole queue), but already reported last round.
  assert.deepEqual([...plan.fetch.keys()], ["queued.txt"]);
  assert.deepEqual(plan.log, []);
});

Deno.test("planDownloads() keeps the directory's order and changes nothing it is given", () => {
  const directory = { "b.txt": entry("10.0.0.2"), "a.txt": entry("10.0.0.3"), "../x": entry("h") };
  const given = input(directory, {
    warned: new Set(),
    badHolders: new Map([["10.0.0.2:8001", NOW]]),
  });
  const before = structuredClone(given);
  const one = planDownloads(given);
  const two = planDownloads(given);
  assert.deepEqual([...one.fetch.keys()], ["b.txt", "a.txt"]);
  assert.deepEqual(one, two, "the same input gives the same plan");
  assert.deepEqual(given, before, "the input is not changed");
});

Deno.test("holdersInOrder() lists the chosen holder, then others of the same version once each", () => {
  const e: DirectoryEntry = {
    ip: "10.0.0.2",
    port: 8001,
    mtime: MTIME,
    holders: [
      { ip: "10.0.0.2", port: 8001, mtime: MTIME },
      { ip: "10.0.0.3", port: 8001, mtime: MTIME - 1 }, // an older version: not this file
      { ip: "10.0.0.4", port: 8001, mtime: MTIME },
      { ip: "10.0.0.4", port: 8001, mtime: MTIME }, // listed twice
      { ip: "10.0.0.4", port: 8002, mtime: MTIME },
    ],
  };
  assert.deepEqual(holdersInOrder(e, undefined, new Map(), NOW), [
    { ip: "10.0.0.2", port: 8001 },
    { ip: "10.0.0.4", port: 8001 },
    { ip: "10.0.0.4", port: 8002 },
  ]);
});

Deno.test("holdersInOrder() tries holders that failed lately last, and forgets after BAD_HOLDER_MS", () => {
  const e = entry("10.0.0.2", MTIME, ["10.0.0.3", "10.0.0.4"]);
  const bad = new Map([["10.0.0.2:8001", NOW - 1000], ["10.0.0.3:8001", NOW - BAD_HOLDER_MS]]);
  // 10.0.0.3 failed exactly BAD_HOLDER_MS ago: forgiven.
  assert.deepEqual(holdersInOrder(e, undefined, bad, NOW).map((s) => s.ip), [
    "10.0.0.3",
    "10.0.0.4",
    "10.0.0.2",
  ]);
  // A bad holder moved last is still tried: the plan names the first good one.
  const plan = planDownloads(input({ "a.txt": e }, { badHolders: bad }));
  assert.deepEqual(plan.log, ["fetching a.txt (missing here) from 10.0.0.3:8001"]);
});

Deno.test("localVersions() counts a download finished during the listing, the newer mtime winning", () => {
  const have = localVersions(
    [{ name: "a.txt", mtime: 100 }, { name: "b.txt", mtime: 300 }],
    new Map([["a.txt", 200], ["b.txt", 250], ["c.txt", 50]]),
  );
  assert.deepEqual(have, new Map([["a.txt", 200], ["b.txt", 300], ["c.txt", 50]]));
  // So a file just fetched is not fetched again from a directory that still lists it.
  const plan = planDownloads(input({ "c.txt": entry("10.0.0.2", 50) }, { local: have }));
  assert.equal(plan.fetch.size, 0);
});

Deno.test("sourceAddr() and sourceName() take an IPv6 address with or without brackets", () => {
  assert.deepEqual(sourceAddr({ ip: "[::1]", port: 8000 }), { hostname: "::1", port: 8000 });
  assert.equal(sourceName({ ip: "[::1]", port: 8000 }), "[::1]:8000");
  assert.equal(sourceName({ ip: "::1", port: 8000 }), "[::1]:8000");
  assert.equal(sourceName({ ip: "10.0.0.2", port: 8000 }), "10.0.0.2:8000");
  // Our own address in either spelling is recognised.
  const plan = planDownloads(
    input({ "a.txt": { ...entry("[::1]"), holders: [] } }, { self: "[::1]:8001" }),
  );
  assert.equal(plan.fetch.size, 0);
});

// ---------------------------------------------------------------------------
// planVersions(): the same step with a tracker that speaks "versions".

const sha = (c: string) => c.repeat(64);

function versionsInput(overrides: Partial<VersionsPlanInput>): VersionsPlanInput {
  return {
    directory: {},
    deleted: {},
    local: new Map(),
    recorded: new Map(),
    deletedHere: new Map(),
    self: "10.0.0.9:8000",
    inFlight: new Set(),
    queued: new Set(),
    badHolders: new Map(),
    warned: new Set(),
    now: 0,
    ...overrides,
  };
}

const versioned = (sha256: string, history: string[] = [], extra = {}) => ({
  ip: "10.0.0.2",
  port: 8001,
  mtime: 100,
  size: 1,
  sha256,
  by: "PEERTWO",
  history,
  ...extra,
});

Deno.test("planVersions(): an older version here is replaced whatever its mtime; the current one is left", () => {
  const plan = planVersions(versionsInput({
    directory: { "a.txt": versioned(sha("b"), [sha("a")]), "b.txt": versioned(sha("c")) },
    // Our a.txt is dated 2030: the mtime rule would keep it for ever.
    local: new Map([
      ["a.txt", { sha256: sha("a"), mtime: 1_900_000_000 }],
      ["b.txt", { sha256: sha("c"), mtime: 5 }],
    ]),
  }));
  assert.deepEqual([...plan.fetch.keys()], ["a.txt"]);
  assert.equal(plan.fetch.get("a.txt")!.byContent, true);
  assert.deepEqual(plan.log, ["fetching a.txt (a newer version there) from 10.0.0.2:8001"]);
});

Deno.test("planVersions(): a copy that lost a conflict is renamed first, then the winner fetched", () => {
  const copyName = "a.sync-conflict-19700101-000140-PEERONE.txt";
  const plan = planVersions(versionsInput({
    directory: {
      "a.txt": versioned(sha("c"), [sha("a")], { copies: [{ sha256: sha("b"), name: copyName }] }),
    },
    local: new Map([["a.txt", { sha256: sha("b"), mtime: 100 }]]),
  }));
  assert.deepEqual(plan.copies, [{ from: "a.txt", to: copyName, sha256: sha("b") }]);
  assert.equal(plan.fetch.get("a.txt")!.localMtime, null);
});

Deno.test("planVersions(): unknown bytes here are kept (they were announced); nothing is fetched over them", () => {
  const plan = planVersions(versionsInput({
    directory: { "a.txt": versioned(sha("c"), [sha("a")]) },
    local: new Map([["a.txt", { sha256: sha("d"), mtime: 1 }]]),
  }));
  assert.equal(plan.fetch.size, 0);
  assert.deepEqual(plan.copies, []);
});

Deno.test("planVersions(): a deleted path deletes the deleted version here, never an edit of it", () => {
  const tombstone = { sha256: sha("b"), history: [sha("a")], time: 9, by: "PEERTWO" };
  const plan = planVersions(versionsInput({
    deleted: { "old.txt": tombstone, "edited.txt": tombstone, "ancient.txt": tombstone },
    local: new Map([
      ["old.txt", { sha256: sha("b"), mtime: 1 }],
      ["edited.txt", { sha256: sha("e"), mtime: 1 }],
      ["ancient.txt", { sha256: sha("a"), mtime: 1 }],
    ]),
  }));
  assert.deepEqual(plan.deletes, [
    { path: "old.txt", sha256: sha("b"), by: "PEERTWO" },
    { path: "ancient.txt", sha256: sha("a"), by: "PEERTWO" },
  ]);
});

Deno.test("planVersions(): a file deleted here is not fetched back while the tracker still lists it", () => {
  const plan = planVersions(versionsInput({
    directory: { "a.txt": versioned(sha("b")), "c.txt": versioned(sha("c")) },
    deletedHere: new Map([["a.txt", { sha256: sha("b") }], ["c.txt", { sha256: sha("x") }]]),
  }));
  // c.txt was deleted here in another version: the one listed is an edit, fetched.
  assert.deepEqual([...plan.fetch.keys()], ["c.txt"]);
});

Deno.test("planVersions(): a course peer's entry (no SHA-256) is fetched by mtime, only over an unchanged copy", () => {
  const course = { ip: "10.0.0.3", port: 8002, mtime: 500 };
  const recorded = new Map([
    ["same.txt", { sha256: sha("a"), size: 1, mtime: 100, by: "X", history: [] }],
    ["edited.txt", { sha256: sha("a"), size: 1, mtime: 100, by: "X", history: [] }],
  ]);
  const plan = planVersions(versionsInput({
    directory: { "same.txt": course, "edited.txt": course, "new.txt": course },
    local: new Map([
      ["same.txt", { sha256: sha("a"), mtime: 100 }],
      ["edited.txt", { sha256: sha("e"), mtime: 100 }],
    ]),
    recorded,
  }));
  assert.deepEqual([...plan.fetch.keys()].sort(), ["new.txt", "same.txt"]);
});

Deno.test("planVersions(): a losing copy is not renamed while the winner cannot be fetched at once", () => {
  const copyName = "a.sync-conflict-19700101-000140-PEERONE.txt";
  const entry = versioned(sha("c"), [sha("a")], { copies: [{ sha256: sha("b"), name: copyName }] });
  const local = new Map([["a.txt", { sha256: sha("b"), mtime: 100 }]]);
  // The winner is being fetched already, or its only holder is this peer itself.
  for (const input of [{ inFlight: new Set(["a.txt"]) }, { self: "10.0.0.2:8001" }]) {
    const plan = planVersions(versionsInput({ directory: { "a.txt": entry }, local, ...input }));
    assert.deepEqual(plan.copies, [], "the name must not stand empty");
    assert.equal(plan.fetch.size, 0);
  }
});
