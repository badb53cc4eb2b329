import { describe, expect, it } from "vitest";
import { SimCluster } from "../../sim/cluster.ts";
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
});
