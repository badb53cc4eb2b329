import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compareForKill, killRank, selectInstancesToKill, type KillCandidate } from "../../../frameworks/marathon/kill-order.ts";

function running(id: string, sinceMs: number, extra: Partial<KillCandidate> = {}): KillCandidate {
  return { id, state: "running", sinceMs, placement: { hostname: `h-${id}`, attributes: {} }, ...extra };
}

const ids = (list: readonly KillCandidate[]) => list.map((c) => c.id);

describe("kill order", () => {
  const fleet: KillCandidate[] = [
    running("old", 100),
    running("mid", 200),
    running("young", 300),
    running("sick", 150, { healthy: false }),
    { id: "staging", state: "staging", sinceMs: 400, placement: { hostname: "h", attributes: {} } },
    { id: "starting", state: "starting", sinceMs: 350, placement: { hostname: "h", attributes: {} } },
    { id: "queued", state: "unscheduled", sinceMs: 500 },
    running("lost", 50, { state: "unreachable" }),
  ];

  it("kills unscheduled, unreachable, unhealthy, staging and starting before healthy running ones", () => {
    expect(ids(selectInstancesToKill(fleet, 8))).toEqual(["queued", "lost", "sick", "staging", "starting", "young", "mid", "old"]);
  });

  it("orders equals by killSelection: YOUNGEST_FIRST by default, OLDEST_FIRST on request", () => {
    const healthy = fleet.filter((c) => killRank(c) === 5);
    expect(ids(selectInstancesToKill(healthy, 2))).toEqual(["young", "mid"]);
    expect(ids(selectInstancesToKill(healthy, 2, { killSelection: "OLDEST_FIRST" }))).toEqual(["old", "mid"]);
  });

  it("kills what the operator named first", () => {
    const named = fleet.map((c) => (c.id === "old" ? { ...c, sentenced: true } : c));
    expect(ids(selectInstancesToKill(named, 2))).toEqual(["old", "queued"]);
  });

  it("returns at most what exists and nothing for a count of zero", () => {
    expect(selectInstancesToKill(fleet, 100)).toHaveLength(fleet.length);
    expect(selectInstancesToKill(fleet, 0)).toEqual([]);
    expect(selectInstancesToKill(fleet, -2)).toEqual([]);
  });

  it("is a total order: ties on state and age fall back to ids", () => {
    const a = running("a", 1);
    const b = running("b", 1);
    expect(compareForKill()(a, b)).toBeLessThan(0);
    expect(compareForKill()(b, a)).toBeGreaterThan(0);
  });

  it("evens out GROUP_BY spreads when scaling down", () => {
    const inRack = (id: string, rack: string, sinceMs: number, extra: Partial<KillCandidate> = {}) =>
      running(id, sinceMs, { placement: { hostname: `h-${id}`, attributes: { rack } }, ...extra });
    // r1 holds 3, r2 holds 1: YOUNGEST_FIRST alone would kill r2's instance, GROUP_BY kills from r1.
    const instances = [inRack("a", "r1", 1), inRack("b", "r1", 2), inRack("c", "r1", 3), inRack("d", "r2", 10)];
    expect(ids(selectInstancesToKill(instances, 1))).toEqual(["d"]);
    expect(ids(selectInstancesToKill(instances, 1, { constraints: [["rack", "GROUP_BY"]] }))).toEqual(["c"]);
    expect(ids(selectInstancesToKill(instances, 2, { constraints: [["rack", "GROUP_BY"]] }))).toEqual(["c", "b"]);
    // Within the largest group, the unhealthy one goes first.
    const sick = instances.map((c) => (c.id === "a" ? { ...c, healthy: false } : c));
    expect(ids(selectInstancesToKill(sick, 1, { constraints: [["rack", "GROUP_BY"]] }))).toEqual(["a"]);
  });

  it("never picks an instance twice and always picks the requested count", () => {
    const candidate = fc.record({
      id: fc.string({ minLength: 1, maxLength: 4 }),
      state: fc.constantFrom("unscheduled", "unreachable", "staging", "starting", "running" as const),
      healthy: fc.option(fc.boolean(), { nil: undefined }),
      sinceMs: fc.integer({ min: 0, max: 1000 }),
      rack: fc.constantFrom("r1", "r2", "r3"),
    });
    fc.assert(
      fc.property(fc.uniqueArray(candidate, { selector: (c) => c.id, maxLength: 20 }), fc.integer({ min: 0, max: 25 }), fc.boolean(), (raw, count, groupBy) => {
        const candidates: KillCandidate[] = raw.map((c) => ({
          id: c.id,
          state: c.state,
          sinceMs: c.sinceMs,
          ...(c.healthy !== undefined ? { healthy: c.healthy } : {}),
          ...(c.state !== "unscheduled" ? { placement: { hostname: c.id, attributes: { rack: c.rack } } } : {}),
        }));
        const chosen = selectInstancesToKill(candidates, count, groupBy ? { constraints: [["rack", "GROUP_BY"]] } : {});
        expect(chosen).toHaveLength(Math.min(count, candidates.length));
        expect(new Set(ids(chosen)).size).toBe(chosen.length);
        if (!groupBy) {
          const worstKept = Math.min(...candidates.filter((c) => !chosen.includes(c)).map(killRank));
          for (const c of chosen) expect(killRank(c)).toBeLessThanOrEqual(worstKept);
        }
      }),
    );
  });
});
