/** The sandbox garbage collector's core (agent/sandbox-gc.ts): pure, time passed in. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DEFAULT_GC_DELAY_MS, DEFAULT_GC_DISK_HEADROOM, maxAllowedAgeMs, SandboxGc, type GcDecision } from "../../agent/sandbox-gc.ts";

const HOUR = 3_600_000;
const paths = (decision: GcDecision): string[] => decision.remove.map((r) => r.path);

describe("maxAllowedAgeMs", () => {
  it("is gcDelay * max(0, 1 - headroom - usage), as Mesos computes the maximum sandbox age", () => {
    expect(maxAllowedAgeMs(100 * HOUR, 0.1, 0)).toBeCloseTo(90 * HOUR);
    expect(maxAllowedAgeMs(100 * HOUR, 0.1, 0.5)).toBeCloseTo(40 * HOUR);
    expect(maxAllowedAgeMs(100 * HOUR, 0, 0.25)).toBeCloseTo(75 * HOUR);
    // At or past 1 - headroom every scheduled sandbox is old enough.
    expect(maxAllowedAgeMs(100 * HOUR, 0.1, 0.9)).toBe(0);
    expect(maxAllowedAgeMs(100 * HOUR, 0.1, 1)).toBe(0);
    expect(maxAllowedAgeMs(100 * HOUR, 1, 0)).toBe(0);
  });

  it("refuses a usage or headroom outside 0..1 and a negative delay, naming it", () => {
    expect(() => maxAllowedAgeMs(HOUR, 0.1, 1.5)).toThrow("disk usage must be a number from 0 to 1, got 1.5");
    expect(() => maxAllowedAgeMs(HOUR, 0.1, Number.NaN)).toThrow("disk usage must be a number from 0 to 1, got NaN");
    expect(() => maxAllowedAgeMs(HOUR, -0.1, 0.5)).toThrow("gcDiskHeadroom must be a number from 0 to 1, got -0.1");
    expect(() => maxAllowedAgeMs(-1, 0.1, 0.5)).toThrow("gcDelayMs must be a finite number >= 0, got -1");
  });
});

describe("SandboxGc", () => {
  it("has Mesos's defaults: one week, 10% headroom", () => {
    const gc = new SandboxGc();
    expect(gc.gcDelayMs).toBe(7 * 24 * HOUR);
    expect(DEFAULT_GC_DELAY_MS).toBe(604_800_000);
    expect(gc.gcDiskHeadroom).toBe(DEFAULT_GC_DISK_HEADROOM);
    expect(DEFAULT_GC_DISK_HEADROOM).toBe(0.1);
  });

  it("refuses a bad configuration, naming the option", () => {
    expect(() => new SandboxGc({ gcDelayMs: Infinity })).toThrow("gcDelayMs must be a finite number >= 0, got Infinity");
    expect(() => new SandboxGc({ gcDiskHeadroom: 2 })).toThrow("gcDiskHeadroom must be a number from 0 to 1, got 2");
    expect(() => new SandboxGc({ maxScheduled: 0 })).toThrow("maxScheduled must be a whole number > 0, got 0");
  });

  it("removes a sandbox gcDelay after it was scheduled, not before, and asks to be woken then", () => {
    const gc = new SandboxGc({ gcDelayMs: 10 * HOUR });
    expect(gc.schedule("/w/sandboxes/fw/a", 1000, 1000)).toEqual({ remove: [], wakeAtMs: 1000 + 10 * HOUR });
    expect(gc.schedule("/w/sandboxes/fw/b", 2000, 2000)).toEqual({ remove: [], wakeAtMs: 1000 + 10 * HOUR });
    expect(gc.due(1000 + 10 * HOUR - 1)).toEqual({ remove: [], wakeAtMs: 1000 + 10 * HOUR });
    const first = gc.due(1000 + 10 * HOUR);
    expect(first).toEqual({ remove: [{ path: "/w/sandboxes/fw/a", sinceMs: 1000 }], wakeAtMs: 2000 + 10 * HOUR });
    // Still held while the shell removes it; handed out once only.
    expect(gc.has("/w/sandboxes/fw/a")).toBe(true);
    expect(paths(gc.due(2000 + 10 * HOUR))).toEqual(["/w/sandboxes/fw/b"]);
    expect(gc.removed("/w/sandboxes/fw/a", 2000 + 10 * HOUR)).toEqual({ remove: [], wakeAtMs: undefined });
    gc.removed("/w/sandboxes/fw/b", 2000 + 10 * HOUR);
    expect(gc.size()).toBe(0);
  });

  it("under disk pressure removes at once what is older than the maximum age, and only that", () => {
    const gc = new SandboxGc({ gcDelayMs: 100 * HOUR, gcDiskHeadroom: 0.1 });
    gc.schedule("old", 0, 0);
    gc.schedule("mid", 30 * HOUR, 30 * HOUR);
    gc.schedule("new", 59 * HOUR, 59 * HOUR);
    const now = 60 * HOUR;
    // 50% used: maximum age 40 h; only "old" (60 h) is older.
    const half = gc.diskUsage(0.5, now);
    expect(half.maxAgeMs).toBeCloseTo(40 * HOUR);
    expect(paths(half)).toEqual(["old"]);
    expect(half.wakeAtMs).toBe(130 * HOUR);
    // 80% used: maximum age 10 h; "mid" (30 h) goes too.
    expect(paths(gc.diskUsage(0.8, now))).toEqual(["mid"]);
    // 90% used (1 - headroom): everything.
    const full = gc.diskUsage(0.9, now);
    expect(full.maxAgeMs).toBe(0);
    expect(paths(full)).toEqual(["new"]);
    expect(full.wakeAtMs).toBeUndefined();
  });

  it("takes a reused sandbox off the schedule, and says when its removal has already begun", () => {
    const gc = new SandboxGc({ gcDelayMs: HOUR });
    gc.schedule("a", 0, 0);
    gc.schedule("b", 0, 0);
    expect(gc.unschedule("a")).toBe("cancelled");
    expect(gc.unschedule("a")).toBe("none");
    expect(paths(gc.diskUsage(1, 10))).toEqual(["b"]);
    expect(gc.unschedule("b")).toBe("removing");
    // Scheduling a sandbox that is being removed leaves it to that removal.
    expect(gc.schedule("b", 20, 20)).toEqual({ remove: [], wakeAtMs: undefined });
    expect(gc.due(10 * HOUR)).toEqual({ remove: [], wakeAtMs: undefined });
    gc.removed("b", 10 * HOUR);
    expect(gc.unschedule("b")).toBe("none");
  });

  it("schedules a sandbox found on disk from its modification time, never later than now", () => {
    const gc = new SandboxGc({ gcDelayMs: 10 * HOUR });
    const now = 100 * HOUR;
    expect(gc.schedule("recent", now - HOUR, now).wakeAtMs).toBe(now + 9 * HOUR);
    // Older than the delay already: due at once.
    expect(gc.schedule("stale", now - 20 * HOUR, now).wakeAtMs).toBe(now);
    expect(paths(gc.due(now))).toEqual(["stale"]);
    // A modification time in the future waits the full delay from now.
    gc.schedule("future", now + 50 * HOUR, now);
    expect(paths(gc.due(now + 10 * HOUR))).toEqual(["recent", "future"]);
  });

  it("moves a sandbox scheduled again to its new time", () => {
    const gc = new SandboxGc({ gcDelayMs: 10 });
    gc.schedule("a", 0, 0);
    gc.schedule("b", 5, 5);
    expect(gc.schedule("a", 8, 8).wakeAtMs).toBe(15);
    expect(paths(gc.due(15))).toEqual(["b"]);
    expect(paths(gc.due(18))).toEqual(["a"]);
  });

  it("keeps at most maxScheduled: one more removes the oldest waiting at once", () => {
    const gc = new SandboxGc({ gcDelayMs: HOUR, maxScheduled: 2 });
    gc.schedule("a", 1, 1);
    gc.schedule("b", 2, 2);
    const third = gc.schedule("c", 3, 3);
    expect(third.remove).toEqual([{ path: "a", sinceMs: 1 }]);
    expect(third.wakeAtMs).toBe(2 + HOUR);
    expect(gc.size()).toBe(3); // "a" until its removal is reported
    gc.removed("a", 4);
    expect(gc.size()).toBe(2);
  });

  it("property: nothing is removed before its delay without pressure, nothing unscheduled is removed, each removal is handed out once", () => {
    type Op = { kind: "schedule" | "unschedule"; path: number; dtMs: number } | { kind: "due" | "removed"; path: number; dtMs: number } | { kind: "disk"; usage: number; dtMs: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ kind: fc.constantFrom("schedule" as const, "unschedule" as const, "due" as const, "removed" as const), path: fc.integer({ min: 0, max: 5 }), dtMs: fc.integer({ min: 0, max: 40 }) }),
      fc.record({ kind: fc.constant("disk" as const), usage: fc.double({ min: 0, max: 1, noNaN: true }), dtMs: fc.integer({ min: 0, max: 40 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), fc.integer({ min: 0, max: 100 }), (ops, delay) => {
        const gc = new SandboxGc({ gcDelayMs: delay, gcDiskHeadroom: 0.1 });
        let now = 0;
        const since = new Map<string, number>();
        const removing = new Set<string>();
        const check = (decision: GcDecision, maxAge: number) => {
          for (const { path, sinceMs } of decision.remove) {
            expect(since.get(path)).toBe(sinceMs); // only what is scheduled, at the time it was
            expect(removing.has(path)).toBe(false); // once
            expect(now - sinceMs).toBeGreaterThanOrEqual(maxAge);
            removing.add(path);
          }
          if (decision.wakeAtMs !== undefined) expect(decision.wakeAtMs).toBeGreaterThanOrEqual(now);
        };
        for (const o of ops) {
          now += o.dtMs;
          if (o.kind === "disk") {
            const decision = gc.diskUsage(o.usage, now);
            check(decision, decision.maxAgeMs);
            continue;
          }
          const path = `p${o.path}`;
          if (o.kind === "schedule") {
            const decision = gc.schedule(path, now, now);
            if (!removing.has(path)) since.set(path, now);
            check(decision, delay);
          } else if (o.kind === "unschedule") {
            const result = gc.unschedule(path);
            expect(result).toBe(removing.has(path) ? "removing" : since.has(path) ? "cancelled" : "none");
            if (result === "cancelled") since.delete(path);
          } else if (o.kind === "due") {
            check(gc.due(now), delay);
          } else if (removing.has(path)) {
            removing.delete(path);
            since.delete(path);
            check(gc.removed(path, now), delay);
          }
        }
        expect(gc.size()).toBe(since.size);
      }),
    );
  });
});
