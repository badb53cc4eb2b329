import { describe, expect, it } from "vitest";
import { SimCluster } from "../../sim/cluster.ts";
import { formatSummary, runScenario } from "../../sim/report.ts";
import { validateScenario } from "../../sim/scenario.ts";

describe("SimCluster", () => {
  it("a crashed agent comes back under the same id (kept in memory), and its lost tasks are retried", async () => {
    const events: Array<Record<string, unknown>> = [];
    const cluster = new SimCluster(
      validateScenario({
        seed: 2,
        endSeconds: 200,
        cluster: { agentClasses: { std: { count: 2, resources: "cpus:2;mem:2048" } } },
        frameworks: [{ name: "f", kind: "tasks", refuseSeconds: 1, tasks: { count: 4, cpus: 1, mem: 256, durationSeconds: 60, arrival: { at: 0 } } }],
        events: [{ atSeconds: 20, type: "fail-agents", class: "std", count: 1, downSeconds: 30 }],
      }),
      { eventLog: (e) => void events.push(e) },
    );
    await cluster.run();
    const crashed = cluster.agents.find((a) => a.node === "agent-std-1")!;
    expect(cluster.stats.agentFailures).toBe(1);
    expect(cluster.stats.agentRestarts).toBe(1);
    expect(crashed.incarnation).toBe(2);
    expect(crashed.agent?.agentId()).toBe(crashed.idStore.id);
    expect(cluster.master.core.sizes().agents).toBe(2);
    // The two tasks on the crashed agent failed and were run again elsewhere or after the restart.
    expect(cluster.stats.failed).toBe(2);
    expect(cluster.stats.retried).toBe(2);
    expect(cluster.stats.completed).toBe(4);
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(["agent-failed", "agent-restarted"]));
    await cluster.shutdown();
  });

  it("ends a class's random failures at failuresUntilSeconds, with every agent they took down back by then, and changes nothing before it", async () => {
    const scenario = (bounded: boolean) =>
      validateScenario({
        seed: 7,
        endSeconds: 300,
        cluster: { agentClasses: { std: { count: 4, resources: "cpus:2;mem:2048", mtbfSeconds: 40, mttrSeconds: 60, ...(bounded ? { failuresUntilSeconds: 100 } : {}) } } },
        frameworks: [{ name: "f", kind: "tasks", refuseSeconds: 1, tasks: { count: 20, cpus: 1, mem: 256, durationSeconds: 30, arrival: { poisson: { ratePerSecond: 0.2 } } } }],
      });
    const run = async (bounded: boolean) => {
      const events: Array<Record<string, unknown> & { t: number; type: string }> = [];
      const cluster = new SimCluster(scenario(bounded), { eventLog: (e) => void events.push(e) });
      await cluster.run();
      const up = cluster.agents.filter((a) => a.up).length;
      await cluster.shutdown();
      return { events, up };
    };
    const bounded = await run(true);
    const free = await run(false);
    const failed = bounded.events.filter((e) => e.type === "agent-failed");
    const restarted = bounded.events.filter((e) => e.type === "agent-restarted");
    expect(failed.length).toBeGreaterThan(2);
    expect(failed.every((e) => e.t < 100_000)).toBe(true);
    expect(restarted).toHaveLength(failed.length);
    expect(restarted.every((e) => e.t <= 100_000)).toBe(true);
    expect(bounded.up).toBe(4);
    // Without the bound the failures go on; with it, the run is the same up to it, but for the
    // repairs cut short to end at it.
    expect(free.events.some((e) => e.type === "agent-failed" && e.t >= 100_000)).toBe(true);
    const before = (run: typeof free) => run.events.filter((e) => e.t < 100_000);
    const withoutDown = (e: Record<string, unknown>) => ({ ...e, downMs: undefined });
    expect(before(bounded).map(withoutDown)).toEqual(before(free).map(withoutDown));
    const freeFailed = before(free).filter((e) => e.type === "agent-failed");
    expect(failed).toHaveLength(freeFailed.length);
    // The log's times are rounded to the µs.
    failed.forEach((e, i) => expect(e.downMs as number).toBeCloseTo(Math.min(freeFailed[i]!.downMs as number, 100_000 - e.t), 2));
    expect(failed.some((e, i) => (e.downMs as number) < (freeFailed[i]!.downMs as number))).toBe(true);
  });

  it("a set-network event changes the network's faults from its time on", async () => {
    const events: Array<Record<string, unknown>> = [];
    let lostBy50 = -1;
    let duplicatedBy50 = -1;
    const cluster: SimCluster = new SimCluster(
      validateScenario({
        seed: 3,
        endSeconds: 120,
        cluster: { agentClasses: { std: { count: 3, resources: "cpus:2;mem:2048" } } },
        network: { lossRate: 0.05, duplicateRate: 0.05 },
        frameworks: [{ name: "d", kind: "decliner", refuseSeconds: 1 }],
        events: [{ atSeconds: 50, type: "set-network", lossRate: 0, duplicateRate: 0 }],
      }),
      {
        eventLog: (e) => void events.push(e),
        afterEvent: () => {
          if (cluster.elapsedMs() > 50_000) return;
          lostBy50 = cluster.network.stats.lost;
          duplicatedBy50 = cluster.network.stats.duplicated;
        },
      },
    );
    await cluster.run();
    expect(lostBy50).toBeGreaterThan(0);
    expect(duplicatedBy50).toBeGreaterThan(0);
    expect(cluster.network.stats.lost).toBe(lostBy50);
    expect(cluster.network.stats.duplicated).toBe(duplicatedBy50);
    expect(events).toContainEqual({ t: 50_000, type: "network-changed", lossRate: 0, duplicateRate: 0 });
    await cluster.shutdown();
  });

  it("a partition cuts agents off from the master until it heals", async () => {
    const cluster = new SimCluster(
      validateScenario({
        seed: 4,
        endSeconds: 100,
        cluster: { agentClasses: { std: { count: 3, resources: "cpus:2;mem:2048" } } },
        frameworks: [{ name: "f", kind: "decliner" }],
        events: [{ atSeconds: 10, type: "partition-agents", class: "std", count: 2, durationSeconds: 30 }],
      }),
    );
    await cluster.run();
    expect(cluster.network.stats.cut).toBeGreaterThan(0);
    expect(cluster.network.reachable("agent-std-2", "master")).toBe(true);
    expect(cluster.master.core.sizes().agents).toBe(3);
  });

  it("overlapping partitions each last as long as the scenario says: a second neither heals the first nor is healed by it", async () => {
    // Fault-injection worlds draw overlapping partitions (11 of the first 100 default check seeds);
    // the event log and the Marathon convergence check take each at its word.
    const seen: Array<{ t: number; a: boolean; b: boolean }> = [];
    const at = [15, 30, 45, 80];
    const cluster: SimCluster = new SimCluster(
      validateScenario({
        seed: 4,
        endSeconds: 100,
        cluster: { agentClasses: { a: { count: 1, resources: "cpus:2;mem:2048" }, b: { count: 1, resources: "cpus:2;mem:2048" } } },
        frameworks: [{ name: "f", kind: "decliner" }],
        events: [
          { atSeconds: 10, type: "partition-agents", class: "a", count: 1, durationSeconds: 60 },
          { atSeconds: 20, type: "partition-agents", class: "b", count: 1, durationSeconds: 20 },
        ],
      }),
      {
        afterEvent: () => {
          const t = cluster.elapsedMs() / 1000;
          while (at.length > 0 && t >= at[0]!) {
            seen.push({ t: at.shift()!, a: cluster.network.reachable("master", "agent-a-0"), b: cluster.network.reachable("master", "agent-b-0") });
          }
        },
      },
    );
    await cluster.run();
    expect(seen).toEqual([
      { t: 15, a: false, b: true },
      { t: 30, a: false, b: false },
      // b healed at 40 s; a stays cut until 70 s.
      { t: 45, a: false, b: true },
      { t: 80, a: true, b: true },
    ]);
    await cluster.shutdown();
  });

  it("pings agents as often as the scenario's cluster says, and notices a cut-off agent that much sooner", async () => {
    const run = async (ping: { agentPingIntervalMs?: number; maxMissedPings?: number }) => {
      const cluster = new SimCluster(
        validateScenario({
          seed: 4,
          endSeconds: 100,
          cluster: { agentClasses: { std: { count: 2, resources: "cpus:2;mem:2048" } }, ...ping },
          frameworks: [{ name: "f", kind: "tasks", refuseSeconds: 1, tasks: { count: 2, cpus: 2, mem: 256, durationSeconds: 80, arrival: { at: 0 } } }],
          events: [{ atSeconds: 10, type: "partition-agents", class: "std", count: 1, durationSeconds: 30 }],
        }),
      );
      await cluster.run();
      await cluster.shutdown();
      return { published: cluster.network.stats.published, retried: cluster.stats.retried };
    };
    // Mesos's defaults (15 s, 5 missed): a 30 s cut goes unnoticed.
    const defaults = await run({});
    expect(defaults.retried).toBe(0);
    // Pinged every 2 s, unreachable after 2 missed: the cut-off agent's task is replaced.
    const eager = await run({ agentPingIntervalMs: 2000, maxMissedPings: 2 });
    expect(eager.retried).toBe(1);
    expect(eager.published).toBeGreaterThan(defaults.published);
    // Pinged every minute: fewer messages than the default.
    const lazy = await run({ agentPingIntervalMs: 60_000 });
    expect(lazy.retried).toBe(0);
    expect(lazy.published).toBeLessThan(defaults.published);
  });
});

describe("SimCluster with several masters", () => {
  it("fails over: a standby takes the lapsed lease, agents and the framework follow it, and running tasks survive", async () => {
    const events: Array<Record<string, unknown>> = [];
    const result = await runScenario(
      {
        seed: 3,
        endSeconds: 120,
        cluster: { agentClasses: { std: { count: 2, resources: "cpus:2;mem:2048" } }, masters: 2, roleWeights: { web: 3 } },
        frameworks: [{ name: "f", kind: "tasks", role: "web", refuseSeconds: 1, tasks: { count: 4, cpus: 1, mem: 256, durationSeconds: 50, arrival: { at: 0 } } }],
        events: [{ atSeconds: 20, type: "master-failover", downSeconds: 30 }],
      },
      { eventLog: (e) => void events.push(e) },
    );
    const masterLines = events.filter((e) => String(e.type).startsWith("master-")).map((e) => [e.type, e.master]);
    expect(masterLines).toEqual([
      ["master-elected", "master-0"],
      ["master-failed", "master-0"],
      ["master-elected", "master-1"],
      ["master-restarted", "master-0"],
    ]);
    const [failover] = result.masters.failovers;
    expect(result.masters.count).toBe(2);
    expect(failover).toMatchObject({ atSeconds: 20, crashed: "master-0", leader: "master-1" });
    // The standby waits for the lease (1.5 s after the last renewal, renewed every 0.25 s).
    expect(failover!.electionSeconds).toBeGreaterThanOrEqual(1.25);
    expect(failover!.electionSeconds).toBeLessThanOrEqual(1.6 + 0.1);
    expect(failover!.recoverySeconds).toBeGreaterThanOrEqual(failover!.electionSeconds!);
    expect(failover!.recoverySeconds).toBeLessThan(10);
    // Tasks launched under the first leader ran on through the failover and were counted once.
    expect(result.tasks).toMatchObject({ submitted: 4, launched: 4, completed: 4, failed: 0 });
    expect(result.agents.atEnd).toBe(2);
    expect(formatSummary(result)).toMatch(/masters {4}2, 1 failovers: at 20 s new leader after [\d.]+ s, first offer after [\d.]+ s/);
  });

  it("applies the scenario's role weights to every new leader (the registry does not keep them)", async () => {
    let cluster: SimCluster | undefined;
    const weights: number[] = [];
    await runScenario(
      {
        seed: 1,
        endSeconds: 40,
        cluster: { agentClasses: { std: { count: 1, resources: "cpus:1;mem:512" } }, masters: 3, roleWeights: { web: 3 } },
        frameworks: [{ name: "d", kind: "decliner", role: "web" }],
        events: [{ atSeconds: 10, type: "master-failover" }, { atSeconds: 20, type: "master-failover" }],
      },
      {
        afterEvent: (c) => {
          cluster = c;
          const leader = c.leader();
          if (leader && c.elapsedMs() > 30_000 && weights.length === 0) weights.push(leader.core.state().roles.find((r) => r.role === "web")?.weight ?? 1);
        },
      },
    );
    expect(weights).toEqual([3]);
    expect(cluster!.masters.failovers.map((f) => f.leader)).toEqual(["master-1", "master-2"]);
  });
});
