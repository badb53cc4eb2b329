import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Resources } from "../../../sdk/resources.ts";
import { SeededRng } from "../../../sdk/rng.ts";
import { createAllocator, type HierarchicalAllocator, type OfferPlan } from "../../../master/allocator/index.ts";

const ROLES = ["a", "b", "eng/web", "eng/api"];
const r = (text: string) => Resources.parse(text);

const agentArb = fc.record({
  cpus: fc.integer({ min: 0, max: 8 }),
  mem: fc.integer({ min: 0, max: 8192 }),
  reservedRole: fc.option(fc.constantFrom("a", "eng"), { nil: undefined }),
  reservedCpus: fc.integer({ min: 0, max: 4 }),
});
const frameworkArb = fc.record({
  roles: fc.subarray(ROLES, { minLength: 1, maxLength: 2 }),
});
type Action =
  | { kind: "allocate"; dtMs: number }
  | { kind: "decline"; index: number; refuseSeconds: number }
  | { kind: "launch"; index: number; fraction: number }
  | { kind: "finish"; index: number }
  | { kind: "suppress" | "revive" | "deactivate" | "activate"; framework: number }
  | { kind: "agentDown" | "agentUp"; agent: number }
  | { kind: "requota"; cpus: number | undefined; mem: number | undefined };
const actionArb: fc.Arbitrary<Action> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("allocate" as const), dtMs: fc.integer({ min: 0, max: 8000 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("decline" as const), index: fc.nat(), refuseSeconds: fc.constantFrom(0, 0, 1, 5, 30) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("launch" as const), index: fc.nat(), fraction: fc.constantFrom(0.25, 0.5, 1) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("finish" as const), index: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom("suppress" as const, "revive" as const, "deactivate" as const, "activate" as const), framework: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom("agentDown" as const, "agentUp" as const), agent: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("requota" as const),
      cpus: fc.option(fc.integer({ min: 0, max: 6 }), { nil: undefined }),
      mem: fc.option(fc.integer({ min: 0, max: 4096 }), { nil: undefined }),
    }),
  },
);
const scenarioArb = fc.record({
  agents: fc.array(agentArb, { minLength: 1, maxLength: 6 }),
  frameworks: fc.array(frameworkArb, { minLength: 1, maxLength: 4 }),
  weights: fc.array(fc.constantFrom(1, 2, 3), { minLength: 4, maxLength: 4 }),
  quotaLimitCpus: fc.option(fc.integer({ min: 0, max: 6 }), { nil: undefined }),
  quotaGuaranteeCpus: fc.option(fc.integer({ min: 0, max: 6 }), { nil: undefined }),
  actions: fc.array(actionArb, { maxLength: 40 }),
  seed: fc.integer(),
});
type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

interface Filter {
  frameworkId: string;
  role: string;
  agentId: string;
  resources: Resources;
  untilMs: number;
}

/**
 * Plays a scenario, calling `check` after every allocation run (and `hooks.created` on the new
 * allocator, `hooks.afterAction` after every action). Returns every plan, serialised.
 */
function play(
  s: Scenario,
  check?: (allocator: HierarchicalAllocator, offers: OfferPlan[], ctx: { nowMs: number; filters: Filter[]; before: Map<string, Resources>; quota: boolean }) => void,
  hooks: { created?: (allocator: HierarchicalAllocator) => void; afterAction?: (allocator: HierarchicalAllocator) => void } = {},
): string[] {
  const allocator = createAllocator({ rng: new SeededRng(s.seed), allocationIntervalMs: 1000 });
  hooks.created?.(allocator);
  const quota = s.quotaLimitCpus !== undefined || s.quotaGuaranteeCpus !== undefined;
  ROLES.forEach((role, i) => allocator.setWeight(role, s.weights[i]!));
  if (quota) {
    const guarantee = Math.min(s.quotaGuaranteeCpus ?? 0, s.quotaLimitCpus ?? Infinity);
    allocator.setQuota("b", {
      guarantees: s.quotaGuaranteeCpus === undefined ? {} : { cpus: guarantee },
      limits: s.quotaLimitCpus === undefined ? {} : { cpus: s.quotaLimitCpus },
    });
  }
  s.agents.forEach((a, i) => {
    let text = `cpus:${a.cpus};mem:${a.mem};ports:[31000-31010]`;
    if (a.reservedRole && a.reservedCpus > 0) text += `;cpus(${a.reservedRole}):${a.reservedCpus}`;
    allocator.addAgent(`agent${i}`, { total: r(text) });
  });
  s.frameworks.forEach((f, i) => allocator.addFramework(`fw${i}`, { roles: f.roles }));
  const outstanding: OfferPlan[] = [];
  const tasks: OfferPlan[] = [];
  const filters: Filter[] = [];
  const plans: string[] = [];
  let nowMs = 0;
  for (const action of s.actions) {
    switch (action.kind) {
      case "allocate": {
        nowMs += action.dtMs;
        const before = new Map(allocator.agentIds().map((id) => [id, allocator.agentView(id)!.available]));
        const offers = allocator.allocate(nowMs);
        plans.push(offers.map((o) => `${o.frameworkId}/${o.role}/${o.agentId}/${o.resources}`).join("|"));
        check?.(allocator, offers, { nowMs, filters: filters.filter((f) => f.untilMs > nowMs), before, quota });
        outstanding.push(...offers);
        break;
      }
      case "decline": {
        if (outstanding.length === 0) break;
        const [offer] = outstanding.splice(action.index % outstanding.length, 1);
        allocator.recoverResources(offer!.frameworkId, offer!.agentId, offer!.role, offer!.resources, { refuseSeconds: action.refuseSeconds, nowMs });
        if (action.refuseSeconds > 0) {
          filters.push({ ...offer!, untilMs: nowMs + Math.max(1000, action.refuseSeconds * 1000) });
        }
        break;
      }
      case "launch": {
        if (outstanding.length === 0) break;
        const [offer] = outstanding.splice(action.index % outstanding.length, 1);
        // Use a share of the offer's scalars; decline the rest without a filter.
        const used = Resources.of(offer!.resources.entries.filter((e) => e.kind === "scalar").map((e) => ({ ...e, millis: Math.floor((e as { millis: number }).millis * action.fraction) })));
        const rest = offer!.resources.subtract(used);
        if (!rest.isEmpty()) allocator.recoverResources(offer!.frameworkId, offer!.agentId, offer!.role, rest);
        if (!used.isEmpty()) tasks.push({ ...offer!, resources: used });
        break;
      }
      case "finish": {
        if (tasks.length === 0) break;
        const [task] = tasks.splice(action.index % tasks.length, 1);
        allocator.recoverResources(task!.frameworkId, task!.agentId, task!.role, task!.resources);
        break;
      }
      case "suppress":
      case "revive":
      case "deactivate":
      case "activate": {
        const id = `fw${action.framework % s.frameworks.length}`;
        if (action.kind === "suppress") allocator.suppressRoles(id);
        if (action.kind === "revive") allocator.reviveRoles(id);
        if (action.kind === "deactivate") allocator.deactivateFramework(id);
        // REVIVE clears the framework's filters, and so does deactivation (as in Mesos).
        if (action.kind === "revive" || action.kind === "deactivate") {
          for (let i = filters.length - 1; i >= 0; i--) if (filters[i]!.frameworkId === id) filters.splice(i, 1);
        }
        if (action.kind === "activate") allocator.activateFramework(id);
        break;
      }
      case "agentDown":
        allocator.deactivateAgent(`agent${action.agent % s.agents.length}`);
        break;
      case "agentUp":
        allocator.activateAgent(`agent${action.agent % s.agents.length}`);
        break;
      case "requota": {
        // A guarantee on role "a" changes mid-run (limits stay as the scenario set them on "b").
        const guarantees: Record<string, number> = {};
        if (action.cpus !== undefined) guarantees.cpus = action.cpus;
        if (action.mem !== undefined) guarantees.mem = action.mem;
        allocator.setQuota("a", { guarantees });
        break;
      }
    }
    expect(allocator.checkInvariants()).toEqual([]);
    hooks.afterAction?.(allocator);
  }
  return plans;
}

const isAllocatable = (res: Resources) => res.scalarMillis("cpus") >= 10 || res.scalarMillis("mem") >= 32_000;

describe("allocator properties (fast-check)", () => {
  it("tells its agent watchers of every change of what is free on an agent or of whether it is active", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const told = new Set<string>();
        let seen = new Map<string, string>();
        const snapshot = (allocator: HierarchicalAllocator) =>
          new Map(allocator.agentIds().map((id) => { const v = allocator.agentView(id)!; return [id, `${v.active}/${v.available}`]; }));
        play(s, undefined, {
          created: (allocator) => {
            allocator.watchAgents((id) => told.add(id));
          },
          afterAction: (allocator) => {
            const now = snapshot(allocator);
            for (const [id, state] of now) if (seen.get(id) !== state) expect(told, `agent ${id} changed to ${state} unannounced`).toContain(id);
            told.clear();
            seen = now;
          },
        });
      }),
      { numRuns: 150 },
    );
  });

  it("never over-allocates an agent and never puts a resource in two offers", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        play(s, (allocator, offers, { before }) => {
          const offeredPerAgent = new Map<string, Resources>();
          for (const o of offers) offeredPerAgent.set(o.agentId, (offeredPerAgent.get(o.agentId) ?? Resources.empty()).add(o.resources));
          for (const [agentId, offered] of offeredPerAgent) {
            // Offers of one run on one agent are disjoint parts of what was free before the run.
            expect(before.get(agentId)!.contains(offered)).toBe(true);
          }
          for (const id of allocator.agentIds()) {
            const view = allocator.agentView(id)!;
            expect(view.total.contains(view.allocated)).toBe(true);
          }
        });
      }),
      { numRuns: 150 },
    );
  });

  it("never exceeds a quota limit", () => {
    fc.assert(
      fc.property(scenarioArb.filter((s) => s.quotaLimitCpus !== undefined), (s) => {
        let previous = 0;
        play(s, (allocator) => {
          // Consumption counts unreserved allocations (b has no reservations here).
          const consumed = allocator.quotaConsumption("b").cpus ?? 0;
          expect(consumed <= s.quotaLimitCpus! || consumed <= previous).toBe(true);
          previous = consumed;
        });
      }),
      { numRuns: 150 },
    );
  });

  it("leaves no allocatable agent unoffered while an eligible framework could take it", () => {
    fc.assert(
      // Quota may rightly hold free resources back (headroom, limits): this law is for clusters without it.
      fc.property(scenarioArb.filter((s) => s.quotaLimitCpus === undefined && s.quotaGuaranteeCpus === undefined && s.actions.every((a) => a.kind !== "requota")), (s) => {
        play(s, (allocator, _offers, { nowMs, filters }) => {
          for (const agentId of allocator.agentIds()) {
            const view = allocator.agentView(agentId)!;
            if (!view.active) continue;
            s.frameworks.forEach((f, i) => {
              const frameworkId = `fw${i}`;
              for (const role of f.roles) {
                if (allocator.isSuppressed(frameworkId, role)) continue;
                const allocatable = view.available.allocatableTo(role);
                if (!isAllocatable(allocatable)) continue;
                const filtered = filters.some(
                  (flt) => flt.frameworkId === frameworkId && flt.role === role && flt.agentId === agentId && flt.resources.contains(allocatable),
                );
                if (filtered || !allocator.isFrameworkActive(frameworkId)) continue;
                throw new Error(`${agentId} has ${allocatable} allocatable to ${role} but ${frameworkId} was not offered it`);
              }
            });
          }
        });
      }),
      { numRuns: 150 },
    );
  });

  it("gives the same plan for the same seed and inputs", () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        expect(play(s)).toEqual(play(s));
      }),
      { numRuns: 60 },
    );
  });
});
