import { describe, expect, it } from "vitest";
import { Resources } from "../../../sdk/resources.ts";
import { SeededRng } from "../../../sdk/rng.ts";
import { AllocatorError, createAllocator, type HierarchicalAllocator, type OfferPlan } from "../../../master/allocator/index.ts";

const r = (text: string) => Resources.parse(text);

function newAllocator(options: { allocationIntervalMs?: number } = {}): HierarchicalAllocator {
  return createAllocator({ rng: new SeededRng(1), shuffleAgents: false, ...options });
}

function addAgents(allocator: HierarchicalAllocator, count: number, resources: string): void {
  for (let i = 1; i <= count; i++) allocator.addAgent(`agent${i}`, { total: r(resources) });
}

/** Declines every offer without a filter. */
function declineAll(allocator: HierarchicalAllocator, offers: OfferPlan[]): void {
  for (const o of offers) allocator.recoverResources(o.frameworkId, o.agentId, o.role, o.resources);
}

function agentsPer(offers: OfferPlan[], key: "frameworkId" | "role"): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of offers) counts[o[key]] = (counts[o[key]] ?? 0) + 1;
  return counts;
}

describe("DRF", () => {
  it("reproduces the DRF paper's example: A gets 3 tasks, B 2, both dominant shares 2/3", () => {
    const allocator = newAllocator();
    allocator.addAgent("agent1", { total: r("cpus:9;mem:18432") });
    allocator.addFramework("A", { roles: ["analytics"] });
    allocator.addFramework("B", { roles: ["analytics"] });
    const taskOf: Record<string, Resources> = { A: r("cpus:1;mem:4096"), B: r("cpus:3;mem:1024") };
    const tasks: Record<string, number> = { A: 0, B: 0 };
    const shareTrace: Array<[string, number]> = [];
    for (let round = 0; round < 20; round++) {
      const offers = allocator.allocate(0);
      let launched = false;
      for (const offer of offers) {
        const task = taskOf[offer.frameworkId]!;
        const rest = offer.resources.trySubtract(task);
        if (rest === null) {
          allocator.recoverResources(offer.frameworkId, offer.agentId, offer.role, offer.resources);
          continue;
        }
        tasks[offer.frameworkId]!++;
        launched = true;
        allocator.recoverResources(offer.frameworkId, offer.agentId, offer.role, rest); // declined, no filter
        shareTrace.push([offer.frameworkId, allocator.frameworkShare(offer.frameworkId, "analytics")]);
      }
      if (!launched && offers.every((o) => taskOf[o.frameworkId] && !o.resources.contains(taskOf[o.frameworkId]!))) break;
    }
    // Each step: who launched and its dominant share right after.
    expect(shareTrace).toEqual([
      ["A", 4 / 18], // <1 cpu, 4 GB>: mem dominates, 4/18 = 2/9
      ["B", 3 / 9], // <3 cpus, 1 GB>: cpus dominate, 1/3
      ["A", 8 / 18], // A (2/9) is lowest: 4/9
      ["B", 6 / 9], // B (1/3) is lowest: 2/3
      ["A", 12 / 18], // A (4/9) is lowest: 2/3
    ]);
    expect(tasks).toEqual({ A: 3, B: 2 });
    expect(allocator.frameworkShare("A", "analytics")).toBeCloseTo(2 / 3, 12);
    expect(allocator.frameworkShare("B", "analytics")).toBeCloseTo(2 / 3, 12);
  });

  it("counts reserved resources toward their role's share and offers them only to that role", () => {
    const allocator = newAllocator();
    allocator.addAgent("agent1", { total: r("cpus:4;mem:4096;cpus(a):4;mem(a):4096") });
    allocator.addFramework("FA", { roles: ["a"] });
    allocator.addFramework("FB", { roles: ["b"] });
    // Before any offer: a's unallocated reservation is half the cluster: share 1/2; b has 0.
    expect(allocator.roleShare("a")).toBe(0.5);
    expect(allocator.roleShare("b")).toBe(0);
    const offers = allocator.allocate(0);
    // b (0) goes first and may take only unreserved resources; then a gets its reservation.
    expect(offers.map((o) => [o.frameworkId, o.resources.toString()])).toEqual([
      ["FB", "cpus:4;mem:4096"],
      ["FA", "cpus(a):4;mem(a):4096"],
    ]);
    expect(allocator.roleShare("a")).toBe(0.5); // allocating its own reservation does not move a's share
    expect(allocator.roleShare("b")).toBe(0.5);
  });

  it("offers reservations of a role to its descendants", () => {
    const allocator = newAllocator();
    allocator.addAgent("agent1", { total: r("cpus(eng):2;mem(eng):1024") });
    allocator.addFramework("other", { roles: ["ops"] });
    allocator.addFramework("web", { roles: ["eng/web"] });
    const offers = allocator.allocate(0);
    expect(offers).toHaveLength(1);
    expect(offers[0]!.frameworkId).toBe("web");
    expect(offers[0]!.resources.toString()).toBe("cpus(eng):2;mem(eng):1024");
  });

  it("compares nested roles by subtree share", () => {
    const allocator = newAllocator();
    addAgents(allocator, 6, "cpus:1;mem:1024");
    allocator.addFramework("api", { roles: ["eng/api"] });
    allocator.addFramework("web", { roles: ["eng/web"] });
    allocator.addFramework("ops", { roles: ["ops"] });
    const offers = allocator.allocate(0);
    // Step by step (share after the step): api eng=1/6 | ops 1/6 | web eng=2/6 | ops 2/6 |
    // api eng=3/6 | ops 3/6. Subtrees eng and ops end equal, 3 agents each; flat roles would give 2/2/2.
    expect(offers.map((o) => o.frameworkId)).toEqual(["api", "ops", "web", "ops", "api", "ops"]);
    expect(agentsPer(offers, "frameworkId")).toEqual({ api: 2, web: 1, ops: 3 });
    expect(allocator.roleShare("eng")).toBe(0.5);
    expect(allocator.roleShare("ops")).toBe(0.5);
  });

  it("counts a parent's reservation toward the share of the subrole it is allocated to", () => {
    const allocator = newAllocator();
    allocator.addAgent("reserved", { total: r("cpus(eng):8;mem(eng):8192") });
    addAgents(allocator, 4, "cpus:1;mem:1024");
    allocator.addFramework("web", { roles: ["eng/web"] });
    allocator.addFramework("api", { roles: ["eng/api"] });
    const offers = allocator.allocate(0);
    // api (first by name at equal shares) gets eng's reservation: 8 of 12 cpus, a share of 2/3,
    // as Mesos's role sorter counts what a role is allocated. web, at 0, then gets every
    // unreserved agent (4/12 < 2/3); eng's subtree is charged the reservation once.
    expect(offers.map((o) => [o.frameworkId, o.agentId])).toEqual([
      ["api", "reserved"],
      ["web", "agent1"],
      ["web", "agent2"],
      ["web", "agent3"],
      ["web", "agent4"],
    ]);
    expect(allocator.roleShare("eng/api")).toBeCloseTo(2 / 3, 12);
    expect(allocator.roleShare("eng/web")).toBeCloseTo(1 / 3, 12);
    expect(allocator.roleShare("eng")).toBe(1);
    // Declined, the reservation is eng's again: unallocated, it still counts toward eng.
    allocator.recoverResources("api", "reserved", "eng/api", offers[0]!.resources);
    expect(allocator.roleShare("eng/api")).toBe(0);
    expect(allocator.roleShare("eng")).toBe(1);
    expect(allocator.checkInvariants()).toEqual([]);
  });

  it.each([
    [[1, 1], [3, 3]],
    [[1, 2], [2, 4]],
    [[1, 2, 3], [1, 2, 3]],
  ])("splits six equal agents by weights %j into %j", (weights, expected) => {
    const allocator = newAllocator();
    addAgents(allocator, 6, "cpus:2;mem:2048");
    const roles = weights.map((_, i) => `role${i}`);
    roles.forEach((role, i) => {
      allocator.setWeight(role, weights[i]!);
      allocator.addFramework(`fw${i}`, { roles: [role] });
    });
    const offers = allocator.allocate(0);
    const perRole = agentsPer(offers, "role");
    expect(roles.map((role) => perRole[role] ?? 0)).toEqual(expected);
    // Weighted shares end equal: agents / 6 / weight.
    const shares = roles.map((role) => allocator.roleShare(role));
    for (const share of shares) expect(share).toBeCloseTo(shares[0]!, 12);
  });

  it("alternates one agent between two equal frameworks through the allocation count", () => {
    const allocator = newAllocator();
    addAgents(allocator, 1, "cpus:1;mem:512");
    allocator.addFramework("A", { roles: ["r"] });
    allocator.addFramework("B", { roles: ["r"] });
    const receivers: string[] = [];
    for (let i = 0; i < 6; i++) {
      const offers = allocator.allocate(i * 1000);
      receivers.push(...offers.map((o) => o.frameworkId));
      declineAll(allocator, offers); // shares back to 0 each time; only the counts differ
    }
    expect(receivers).toEqual(["A", "B", "A", "B", "A", "B"]);
  });
});

describe("filters, suppress and revive", () => {
  it("keeps a decline filter for the allocation interval when refuse_seconds is shorter", () => {
    const allocator = newAllocator({ allocationIntervalMs: 10_000 });
    addAgents(allocator, 1, "cpus:1;mem:512");
    allocator.addFramework("A", { roles: ["r"] });
    const [offer] = allocator.allocate(0);
    allocator.recoverResources("A", "agent1", "r", offer!.resources, { refuseSeconds: 1, nowMs: 0 });
    expect(allocator.allocate(2_000)).toEqual([]); // refuse_seconds (1 s) is over, the interval (10 s) is not
    expect(allocator.allocate(9_999)).toEqual([]);
    expect(allocator.allocate(10_000)).toHaveLength(1);
  });

  it("offers a declined agent to another framework, and to the decliner once more is free", () => {
    const allocator = newAllocator();
    addAgents(allocator, 1, "cpus:2;mem:1024");
    allocator.addFramework("A", { roles: ["r"] });
    const [offer] = allocator.allocate(0);
    // A launches half and declines the rest for 60 s.
    const rest = offer!.resources.subtract(r("cpus:1;mem:512"));
    allocator.recoverResources("A", "agent1", "r", rest, { refuseSeconds: 60, nowMs: 0 });
    expect(allocator.allocate(1_000)).toEqual([]);
    allocator.addFramework("B", { roles: ["r"] });
    expect(allocator.allocate(2_000).map((o) => o.frameworkId)).toEqual(["B"]);
    allocator.recoverResources("B", "agent1", "r", rest); // B declines without filter
    // A's task ends: more is free than A filtered, so the filter no longer covers the offer.
    allocator.recoverResources("A", "agent1", "r", r("cpus:1;mem:512"));
    const offers = allocator.allocate(3_000);
    expect(offers).toHaveLength(1);
    expect(offers[0]!.resources.toString()).toBe("cpus:2;mem:1024");
  });

  it("keeps every decline filter until it ends: a newer, shorter one does not cancel an older one", () => {
    const allocator = newAllocator();
    addAgents(allocator, 1, "cpus:4;mem:4096");
    allocator.addFramework("A", { roles: ["r"] });
    const [first] = allocator.allocate(0);
    // A runs a task and refuses the rest of this agent for an hour.
    const task = r("cpus:1;mem:1024");
    const rest = first!.resources.subtract(task);
    allocator.recoverResources("A", "agent1", "r", rest, { refuseSeconds: 3600, nowMs: 0 });
    // The task ends: the whole agent is more than A refused, so A is offered it, and declines it for 5 s.
    allocator.recoverResources("A", "agent1", "r", task);
    const [whole] = allocator.allocate(1_000);
    expect(whole!.resources.toString()).toBe("cpus:4;mem:4096");
    allocator.recoverResources("A", "agent1", "r", whole!.resources, { refuseSeconds: 5, nowMs: 1_000 });
    // B takes a task's worth, and gives the rest back unfiltered.
    allocator.addFramework("B", { roles: ["r"] });
    const [toB] = allocator.allocate(2_000);
    expect(toB!.frameworkId).toBe("B");
    allocator.recoverResources("B", "agent1", "r", toB!.resources.subtract(task));
    // The 5 s filter has ended, the hour-long one has not and covers what is free: as in Mesos
    // (any of a framework's filters on an agent may refuse an offer), A is not offered it; B is.
    const offers = allocator.allocate(7_000);
    expect(offers.map((o) => [o.frameworkId, o.resources.toString()])).toEqual([["B", "cpus:3;mem:3072"]]);
  });

  it("suppress stops offers for a role; revive restores them and clears filters", () => {
    const allocator = newAllocator();
    addAgents(allocator, 1, "cpus:1;mem:512");
    allocator.addFramework("A", { roles: ["r", "s"] });
    allocator.suppressRoles("A", ["r"]);
    const [offer] = allocator.allocate(0);
    expect(offer!.role).toBe("s");
    allocator.recoverResources("A", "agent1", "s", offer!.resources, { refuseSeconds: 3600, nowMs: 0 });
    allocator.suppressRoles("A");
    expect(allocator.allocate(1_000)).toEqual([]);
    allocator.reviveRoles("A", ["s"]);
    const revived = allocator.allocate(2_000);
    expect(revived.map((o) => o.role)).toEqual(["s"]); // filter gone; r still suppressed
    allocator.reviveRoles("A");
    allocator.recoverResources("A", "agent1", "s", revived[0]!.resources);
    expect(allocator.allocate(3_000)).toHaveLength(1);
  });

  it("forgets a framework's decline filters when it is deactivated, as Mesos does", () => {
    const allocator = newAllocator();
    addAgents(allocator, 1, "cpus:2;mem:1024");
    allocator.addFramework("A", { roles: ["r"] });
    const [offer] = allocator.allocate(0);
    allocator.recoverResources("A", "agent1", "r", offer!.resources, { refuseSeconds: 3600, nowMs: 0 });
    expect(allocator.allocate(1_000)).toEqual([]);
    // The scheduler disconnects; whoever connects next has not declined anything.
    allocator.deactivateFramework("A");
    allocator.activateFramework("A");
    const offers = allocator.allocate(2_000);
    expect(offers.map((o) => [o.frameworkId, o.role, o.resources.toString()])).toEqual([["A", "r", "cpus:2;mem:1024"]]);
  });

  it("clears the filters of roles an update unsuppresses, as a REVIVE of them would", () => {
    const allocator = newAllocator();
    addAgents(allocator, 1, "cpus:2;mem:1024");
    allocator.addFramework("A", { roles: ["r"] });
    const [offer] = allocator.allocate(0);
    allocator.recoverResources("A", "agent1", "r", offer!.resources, { refuseSeconds: 3600, nowMs: 0 });
    allocator.suppressRoles("A", ["r"]);
    // Still suppressed after the update: nothing; no longer suppressed: offered despite the decline.
    allocator.updateFramework("A", { roles: ["r"], suppressedRoles: ["r"] });
    expect(allocator.allocate(1_000)).toEqual([]);
    allocator.updateFramework("A", { roles: ["r"], suppressedRoles: [] });
    expect(allocator.allocate(2_000).map((o) => [o.frameworkId, o.resources.toString()])).toEqual([["A", "cpus:2;mem:1024"]]);
  });

  it("does not offer deactivated frameworks or agents", () => {
    const allocator = newAllocator();
    addAgents(allocator, 2, "cpus:1;mem:512");
    allocator.addFramework("A", { roles: ["r"] });
    allocator.deactivateFramework("A");
    expect(allocator.allocate(0)).toEqual([]);
    allocator.activateFramework("A");
    allocator.deactivateAgent("agent1");
    expect(allocator.allocate(0).map((o) => o.agentId)).toEqual(["agent2"]);
  });
});

describe("runs over all agents visit only what changed", () => {
  it("skips agents nothing happened to, and visits one whose task ended or whose filter ran out", () => {
    const allocator = newAllocator();
    addAgents(allocator, 100, "cpus:4;mem:4096");
    allocator.addFramework("A", { roles: ["r"] });
    const first = allocator.allocate(0);
    expect(first).toHaveLength(100);
    expect(allocator.lastRunCandidates()).toBe(100);
    // A runs a task on agent1 and declines everything else for 60 s.
    const task = r("cpus:1;mem:1024");
    for (const o of first) {
      const declined = o.agentId === "agent1" ? o.resources.subtract(task) : o.resources;
      allocator.recoverResources("A", o.agentId, "r", declined, { refuseSeconds: 60, nowMs: 0 });
    }
    // The run after the declines looks at the agents they changed, and offers nothing.
    expect(allocator.allocate(1_000)).toEqual([]);
    expect(allocator.lastRunCandidates()).toBe(100);
    // Nothing changed since: the next runs visit no agent at all.
    expect(allocator.allocate(2_000)).toEqual([]);
    expect(allocator.lastRunCandidates()).toBe(0);
    // The task ends: its agent alone is visited, and offered whole (more is free than A refused).
    allocator.recoverResources("A", "agent1", "r", task);
    expect(allocator.allocate(3_000).map((o) => [o.agentId, o.resources.toString()])).toEqual([["agent1", "cpus:4;mem:4096"]]);
    expect(allocator.lastRunCandidates()).toBe(1);
    // The filters run out at 60 s: those agents are offered again.
    expect(allocator.allocate(59_999)).toEqual([]);
    expect(allocator.allocate(60_000)).toHaveLength(99);
  });

  it("visits every agent again when a framework arrives or revives, or weights and quota change", () => {
    const allocator = newAllocator();
    addAgents(allocator, 10, "cpus:4;mem:4096");
    allocator.addFramework("A", { roles: ["r"] });
    declineAll(allocator, allocator.allocate(0));
    allocator.suppressRoles("A");
    allocator.allocate(1_000);
    expect(allocator.allocate(2_000)).toEqual([]);
    expect(allocator.lastRunCandidates()).toBe(0);
    allocator.reviveRoles("A");
    const revived = allocator.allocate(3_000);
    expect(revived).toHaveLength(10);
    declineAll(allocator, revived);
    allocator.suppressRoles("A");
    allocator.allocate(4_000);
    allocator.addFramework("B", { roles: ["s"] });
    const toB = allocator.allocate(5_000);
    expect(allocator.lastRunCandidates()).toBe(10);
    expect(toB.map((o) => o.frameworkId)).toEqual(Array(10).fill("B"));
    allocator.allocate(6_000);
    allocator.setWeight("s", 2);
    allocator.allocate(7_000);
    expect(allocator.lastRunCandidates()).toBe(10);
    allocator.setQuota("s", { guarantees: { cpus: 1 } });
    allocator.allocate(8_000);
    expect(allocator.lastRunCandidates()).toBe(10);
  });
});

describe("minimum allocatable resources", () => {
  it("never offers crumbs", () => {
    const allocator = newAllocator();
    allocator.addAgent("tiny", { total: r("cpus:0.009;mem:31;disk:1000;ports:[1-10]") });
    allocator.addAgent("ok", { total: r("cpus:0.01;mem:0") });
    allocator.addFramework("A", { roles: ["r"] });
    expect(allocator.allocate(0).map((o) => o.agentId)).toEqual(["ok"]);
  });

  it("does not offer what a task left behind when it is below the minimum", () => {
    const allocator = newAllocator();
    allocator.addFramework("A", { roles: ["r"] });
    allocator.addFramework("B", { roles: ["r"] });
    allocator.addAgent("agent1", { total: r("cpus:1;mem:512"), used: [{ frameworkId: "A", role: "r", resources: r("cpus:0.995;mem:500") }] });
    expect(allocator.allocate(0)).toEqual([]);
  });
});

describe("quota", () => {
  it("holds an agent back for a role's unmet guarantee", () => {
    const allocator = newAllocator();
    addAgents(allocator, 2, "cpus:2;mem:2048");
    allocator.setQuota("q", { guarantees: { cpus: 2, mem: 2048 } });
    allocator.addFramework("Q", { roles: ["q"], suppressedRoles: ["q"] });
    allocator.addFramework("O", { roles: ["other"] });
    const first = allocator.allocate(0);
    expect(first.map((o) => [o.frameworkId, o.resources.toString()])).toEqual([["O", "cpus:2;mem:2048"]]);
    expect(allocator.allocate(1_000)).toEqual([]); // the second agent is headroom for q
    allocator.reviveRoles("Q");
    const second = allocator.allocate(2_000);
    expect(second.map((o) => [o.frameworkId, o.resources.toString()])).toEqual([["Q", "cpus:2;mem:2048"]]);
    expect(allocator.quotaConsumption("q")).toEqual({ cpus: 2, mem: 2048 });
  });

  it("satisfies guarantees first, up to the guarantee", () => {
    const allocator = newAllocator();
    addAgents(allocator, 1, "cpus:4;mem:4096");
    allocator.setQuota("z", { guarantees: { cpus: 1 } });
    allocator.addFramework("A", { roles: ["a"] });
    allocator.addFramework("Z", { roles: ["z"] });
    const offers = allocator.allocate(0);
    // Stage 1: z lacks 1 cpu and gets exactly that (plus mem, which it has no guarantee on and
    // nobody needs as headroom); stage 2: a (share 0 < z's) gets the remaining 3 cpus.
    expect(offers.map((o) => [o.frameworkId, o.resources.toString()])).toEqual([
      ["Z", "cpus:1;mem:4096"],
      ["A", "cpus:3"],
    ]);
  });

  it("gives a role nothing in the guarantee stage on an agent that has nothing toward its guarantee", () => {
    const allocator = newAllocator();
    allocator.addFramework("Q", { roles: ["q"] });
    allocator.addFramework("X", { roles: ["x"] });
    allocator.addFramework("B", { roles: ["b"] });
    // q runs on 2 of the 4 cpus it is guaranteed; agent2's cpus are all taken, only its mem is free.
    allocator.addAgent("agent1", { total: r("cpus:2;mem:1024"), used: [{ frameworkId: "Q", role: "q", resources: r("cpus:2;mem:1024") }] });
    allocator.addAgent("agent2", { total: r("cpus:2;mem:8192"), used: [{ frameworkId: "X", role: "x", resources: r("cpus:2;mem:1024") }] });
    allocator.setQuota("q", { guarantees: { cpus: 4 } });
    // Memory brings q no closer to its cpus, so it goes by fair share in stage 2, as in Mesos
    // (whose stage 1 skips a role that would get nothing it is guaranteed): to b, whose share is 0.
    expect(allocator.allocate(0).map((o) => [o.frameworkId, o.agentId, o.resources.toString()])).toEqual([["B", "agent2", "mem:7168"]]);
  });

  it("makes one offer of what both stages give a framework's role on one agent", () => {
    const allocator = newAllocator();
    addAgents(allocator, 2, "cpus:4;mem:4096");
    allocator.setQuota("z", { guarantees: { cpus: 1 } });
    allocator.addFramework("Z", { roles: ["z"] });
    const offers = allocator.allocate(0);
    // Stage 1 gives z its missing cpu (and mem) on the first agent; stage 2 gives z the rest of
    // that agent, added to the same offer, and the whole second agent as an offer of its own.
    expect(offers.map((o) => [o.frameworkId, o.role, o.agentId, o.resources.toString()])).toEqual([
      ["Z", "z", "agent1", "cpus:4;mem:4096"],
      ["Z", "z", "agent2", "cpus:4;mem:4096"],
    ]);
    for (const offer of offers) allocator.recoverResources(offer.frameworkId, offer.agentId, offer.role, offer.resources);
    expect(allocator.quotaConsumption("z")).toEqual({});
  });

  it("splits one agent between two roles when a quota limit chops the first offer", () => {
    const allocator = newAllocator();
    addAgents(allocator, 1, "cpus:4;mem:4096;ports:[31000-31009]");
    allocator.setQuota("a", { limits: { cpus: 2, mem: 2048 } });
    allocator.addFramework("A", { roles: ["a"] });
    allocator.addFramework("B", { roles: ["b"] });
    const offers = allocator.allocate(0);
    expect(offers.map((o) => [o.frameworkId, o.resources.toString()])).toEqual([
      ["A", "cpus:2;mem:2048;ports:[31000-31009]"],
      ["B", "cpus:2;mem:2048"],
    ]);
    allocator.recoverResources("B", "agent1", "b", offers[1]!.resources);
    allocator.removeFramework("B");
    expect(allocator.allocate(1_000)).toEqual([]); // a is at its limit; nothing more for it
  });
});

describe("bad input leaves the state unchanged", () => {
  it("refuses unknown ids, foreign recovers, bad weights and bad quota", () => {
    const allocator = newAllocator();
    addAgents(allocator, 1, "cpus:1;mem:512");
    allocator.addFramework("A", { roles: ["r"] });
    const [offer] = allocator.allocate(0);
    const expectCode = (fn: () => void, code: string) => {
      try {
        fn();
      } catch (error) {
        expect(error).toBeInstanceOf(AllocatorError);
        expect((error as AllocatorError).code).toBe(code);
        return;
      }
      throw new Error(`expected ${code}`);
    };
    expectCode(() => allocator.recoverResources("nope", "agent1", "r", offer!.resources), "CORRAL_ERR_UNKNOWN_FRAMEWORK");
    expectCode(() => allocator.recoverResources("A", "nope", "r", offer!.resources), "CORRAL_ERR_UNKNOWN_AGENT");
    expectCode(() => allocator.recoverResources("A", "agent1", "r", r("cpus:2")), "CORRAL_ERR_NOT_ALLOCATED");
    expectCode(() => allocator.recoverResources("A", "agent1", "other", r("cpus:1")), "CORRAL_ERR_NOT_ALLOCATED");
    expectCode(() => allocator.setWeight("r", 0), "CORRAL_ERR_BAD_WEIGHT");
    expectCode(() => allocator.setWeight("r", -1), "CORRAL_ERR_BAD_WEIGHT");
    expectCode(() => allocator.setWeight("r", Number.NaN), "CORRAL_ERR_BAD_WEIGHT");
    expectCode(() => allocator.setQuota("r", { guarantees: { cpus: -1 } }), "CORRAL_ERR_BAD_QUOTA");
    expectCode(() => allocator.setQuota("r", { guarantees: { cpus: 2 }, limits: { cpus: 1 } }), "CORRAL_ERR_BAD_QUOTA");
    expectCode(() => allocator.setQuota("r/x", { limits: { cpus: 1 } }), "CORRAL_ERR_BAD_QUOTA");
    // The same resource-name rule as agents' resources: a name an agent may not advertise has no quota.
    expectCode(() => allocator.setQuota("r", { limits: { ["g".repeat(65)]: 1 } }), "CORRAL_ERR_BAD_QUOTA");
    expectCode(() => allocator.setQuota("r", { limits: { "c pu": 1 } }), "CORRAL_ERR_BAD_QUOTA");
    expectCode(() => allocator.setWeight("..", 1), "CORRAL_ERR_BAD_ROLE");
    expectCode(() => allocator.addFramework("A", { roles: ["r"] }), "CORRAL_ERR_DUPLICATE_FRAMEWORK");
    expectCode(() => allocator.addFramework("C", { roles: [] }), "CORRAL_ERR_BAD_ROLE");
    expectCode(() => allocator.addAgent("agent1", { total: r("cpus:1") }), "CORRAL_ERR_DUPLICATE_AGENT");
    expectCode(() => allocator.addAgent("x", { total: r("cpus:1"), used: [{ frameworkId: "A", role: "r", resources: r("cpus:2") }] }), "CORRAL_ERR_OVER_ALLOCATED");
    // Nothing changed: A still holds exactly its offer, the weights and quotas are as before.
    expect(allocator.frameworkAllocation("A").equals(offer!.resources)).toBe(true);
    expect(allocator.getWeights().size).toBe(0);
    expect(allocator.getQuotas().size).toBe(0);
    expect(allocator.agentIds()).toEqual(["agent1"]);
    expect(allocator.checkInvariants()).toEqual([]);
  });

  it("refuses an agent whose usages hold the same port, naming the usage, and does not add it", () => {
    const allocator = newAllocator();
    allocator.addFramework("A", { roles: ["r"] });
    const used = [
      { frameworkId: "A", role: "r", resources: r("cpus:1;ports:[31000-31000]") },
      { frameworkId: "A", role: "r", resources: r("cpus:0.5;ports:[31000-31000]") },
    ];
    let error: unknown;
    try {
      allocator.addAgent("x", { total: r("cpus:2;mem:512;ports:[31000-31010]"), used });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(AllocatorError);
    expect((error as AllocatorError).code).toBe("CORRAL_ERR_OVER_ALLOCATED");
    expect((error as AllocatorError).message).toBe(
      "agent 'x': used[1] (cpus:0.5;ports:[31000-31000]) is more than cpus:1;mem:512;ports:[31001-31010], what the usages before it leave of its total cpus:2;mem:512;ports:[31000-31010]",
    );
    expect(allocator.agentIds()).toEqual([]);
    expect(allocator.frameworkAllocation("A").isEmpty()).toBe(true);
    expect(allocator.checkInvariants()).toEqual([]);
    // The same agent with sound usages is added.
    allocator.addAgent("x", { total: r("cpus:2;mem:512;ports:[31000-31010]"), used: [used[0]!] });
    expect(allocator.frameworkAllocation("A").toString()).toBe("cpus:1;ports:[31000-31000]");
  });
});

describe("quota is on scalars", () => {
  const refusal = (fn: () => void): AllocatorError | undefined => {
    try {
      fn();
    } catch (error) {
      return error as AllocatorError;
    }
    return undefined;
  };

  it("refuses a quantity too large to count in thousandths with an AllocatorError naming the field", () => {
    const allocator = newAllocator();
    const error = refusal(() => allocator.setQuota("web", { guarantees: { cpus: 1 }, limits: { mem: 1e16 } }));
    expect(error).toBeInstanceOf(AllocatorError);
    expect(error).toMatchObject({ code: "CORRAL_ERR_BAD_QUOTA", message: "limits.mem must be at most 9007199254740, got 10000000000000000" });
    expect(allocator.getQuotas().size).toBe(0);
  });

  it("refuses quota on ports, and tells which names agents have as ranges or sets", () => {
    const allocator = newAllocator();
    allocator.addAgent("agent1", { total: r("cpus:4;mem:4096;ports:[31000-31010];zones:{a,b};lanes:[1-4]") });
    expect(refusal(() => allocator.setQuota("web", { limits: { cpus: 2 }, guarantees: { ports: 5 } }))).toMatchObject({
      code: "CORRAL_ERR_BAD_QUOTA",
      message: "guarantees.ports: quota is set on scalar resources only; 'ports' is a ranges resource",
    });
    expect(allocator.getQuotas().size).toBe(0);
    expect(allocator.quotaResourceProblem("ports")).toBe("quota is set on scalar resources only; 'ports' is a ranges resource");
    expect(allocator.quotaResourceProblem("zones")).toBe("quota is set on scalar resources only; agent 'agent1' has 'zones' as a set");
    expect(allocator.quotaResourceProblem("lanes")).toBe("quota is set on scalar resources only; agent 'agent1' has 'lanes' as ranges");
    expect(allocator.quotaResourceProblem("cpus")).toBeUndefined();
    // Custom scalars are fine.
    allocator.setQuota("web", { guarantees: { cpus: 1, "bandwidth.net": 10 } });
    expect(allocator.getQuotas().get("web")).toEqual({ guarantees: { cpus: 1, "bandwidth.net": 10 }, limits: {} });
  });
});

describe("the default role", () => {
  it("lets frameworks in '*' take only unreserved resources", () => {
    const allocator = newAllocator();
    allocator.addAgent("agent1", { total: r("cpus:1;mem:512;cpus(eng):2") });
    allocator.addFramework("A", { roles: ["*"] });
    const offers = allocator.allocate(0);
    expect(offers.map((o) => [o.role, o.resources.toString()])).toEqual([["*", "cpus:1;mem:512"]]);
    expect(() => allocator.setWeight("*", 2)).toThrow(AllocatorError);
  });
});

describe("checkInvariants", () => {
  /** The books the allocator keeps as it goes, reached behind its back to corrupt them. */
  interface Books {
    allocatedTotals: Map<string, number>;
    allocatedByFramework: Map<string, Map<string, number>>;
    consumption: Map<string, Map<string, number>>;
    roleSorter: { allocated(client: string, quantities: ReadonlyMap<string, number>): void; unallocated(client: string, quantities: ReadonlyMap<string, number>): void };
  }

  it("names each running book that no longer matches a recomputation from the allocations, and only those", () => {
    const allocator = newAllocator();
    allocator.addAgent("agent1", { total: r("cpus:4;mem:1024") });
    allocator.addFramework("F", { roles: ["r"] });
    expect(allocator.allocate(0)).toHaveLength(1);
    expect(allocator.checkInvariants()).toEqual([]);
    const books = allocator as unknown as Books;

    books.allocatedTotals.set("cpus", 1000);
    expect(allocator.checkInvariants()).toEqual(["allocated totals are cpus,1000,mem,1024000 but the agents' allocations sum to cpus,4000,mem,1024000"]);
    books.allocatedTotals.set("cpus", 4000);
    // A kept zero is a difference here: the running totals drop names that reach zero.
    books.allocatedTotals.set("disk", 0);
    expect(allocator.checkInvariants()).toEqual(["allocated totals are cpus,4000,disk,0,mem,1024000 but the agents' allocations sum to cpus,4000,mem,1024000"]);
    books.allocatedTotals.delete("disk");

    books.allocatedByFramework.get("F")!.set("cpus", 1);
    expect(allocator.checkInvariants()).toEqual(["framework F: holds cpus,1,mem,1024000 by the running count, cpus,4000,mem,1024000 by its allocations"]);
    books.allocatedByFramework.get("F")!.set("cpus", 4000);

    books.consumption.get("r")!.set("cpus", 5);
    expect(allocator.checkInvariants()).toEqual(['consumption of r: kept [["cpus",5],["mem",1024000]] but recomputed [["cpus",4000],["mem",1024000]]']);
    // Zero entries are no figure for the quota books.
    books.consumption.get("r")!.set("cpus", 4000);
    books.consumption.get("r")!.set("disk", 0);
    expect(allocator.checkInvariants()).toEqual([]);

    books.roleSorter.allocated("r", new Map([["cpus", 1000]]));
    expect(allocator.checkInvariants()).toEqual(['role sorter charges r [["cpus",5000],["mem",1024000]] but recomputed [["cpus",4000],["mem",1024000]]']);
    books.roleSorter.unallocated("r", new Map([["cpus", 1000]]));
    expect(allocator.checkInvariants()).toEqual([]);
  });

  it("counts every call that may change it, and no read", () => {
    const allocator = newAllocator();
    const moves = (call: () => unknown): boolean => {
      const before = allocator.changeCount();
      call();
      return allocator.changeCount() > before;
    };
    expect(moves(() => allocator.addAgent("agent1", { total: r("cpus:4;mem:1024") }))).toBe(true);
    expect(moves(() => allocator.addFramework("F", { roles: ["r"] }))).toBe(true);
    let offers: OfferPlan[] = [];
    expect(moves(() => (offers = allocator.allocate(0)))).toBe(true);
    expect(offers).toHaveLength(1);
    expect(moves(() => declineAll(allocator, offers))).toBe(true);
    expect(moves(() => allocator.setWeight("r", 2))).toBe(true);
    expect(moves(() => allocator.setQuota("r", { guarantees: { cpus: 1 } }))).toBe(true);
    expect(moves(() => allocator.suppressRoles("F"))).toBe(true);
    expect(moves(() => allocator.deactivateAgent("agent1"))).toBe(true);
    // Reads, the sorters' shares brought up to date on asking included, do not count.
    expect(moves(() => [allocator.checkInvariants(), allocator.roleShare("r"), allocator.frameworkShare("F", "r"), allocator.agentView("agent1"), allocator.getQuotas()])).toBe(false);
    // A refused call counts too (it may have been half-way).
    expect(moves(() => expect(() => allocator.addAgent("agent1", { total: r("cpus:1") })).toThrow(AllocatorError))).toBe(true);
  });
});
