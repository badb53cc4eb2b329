import { describe, expect, it } from "vitest";
import { faultScenario, MARATHON_CONVERGENCE_SLACK_MS, MarathonConvergenceCheck, runCheck } from "../../sim/check.ts";
import type { SimLogEvent } from "../../sim/cluster.ts";
import { runScenario } from "../../sim/report.ts";
import type { Scenario } from "../../sim/scenario.ts";

function world(apps: Array<Record<string, unknown>>, events: Scenario["events"]): Scenario {
  return {
    seed: 5,
    endSeconds: 300,
    sampleIntervalSeconds: 300,
    cluster: {
      agentClasses: {
        a: { count: 2, resources: "cpus:2;mem:4096", attributes: "rack:r1" },
        b: { count: 2, resources: "cpus:2;mem:4096", attributes: "rack:r2" },
      },
    },
    network: { lossRate: 0.01 },
    frameworks: [{ name: "m", kind: "marathon", marathon: { apps } }],
    events: events ?? [],
  };
}

/** Runs with the check after every event; its first problems and when they came, and the check. */
async function checked(scenario: Scenario): Promise<{ problems: string[]; atMs: number | null; check: MarathonConvergenceCheck; events: SimLogEvent[] }> {
  const check = new MarathonConvergenceCheck();
  const events: SimLogEvent[] = [];
  let first: { problems: string[]; atMs: number } | undefined;
  await runScenario(scenario, {
    eventLog: (e) => {
      events.push(e);
      check.observe(e);
    },
    afterEvent: (cluster) => {
      if (first) return;
      const problems = check.problems(cluster);
      if (problems.length > 0) first = { problems, atMs: cluster.elapsedMs() };
    },
  });
  return { problems: first?.problems ?? [], atMs: first?.atMs ?? null, check, events };
}

describe("fault check: Marathon apps reach their instance count after the faults", () => {
  it("sees the apps complete again after a rack fails and comes back", async () => {
    const { problems, check, events } = await checked(
      world([{ id: "/web", cmd: "x", cpus: 0.5, mem: 256, instances: 4, constraints: [["rack", "GROUP_BY", "2"]] }], [{ atSeconds: 30, type: "fail-rack", rack: "r1", downSeconds: 40 }]),
    );
    expect(problems).toEqual([]);
    const backMs = events.filter((e) => e.type === "agent-restarted").map((e) => e.t);
    expect(backMs).toHaveLength(2);
    // Marathon learned of the lost instances after the rack was back (the master had not noticed
    // the silent agents yet), was short, and was complete again well within the bound.
    const recovery = check.lastRecovery!;
    expect(recovery).not.toBeNull();
    expect(recovery.shortFromMs).toBeGreaterThanOrEqual(Math.max(...backMs));
    expect(recovery.completeAtMs - recovery.shortFromMs).toBeLessThan(MARATHON_CONVERGENCE_SLACK_MS);
  });

  it("reports an app still short once the bound has passed", async () => {
    // One instance per host, four hosts, one removed for good: the fourth instance has nowhere to go.
    const { problems, atMs } = await checked(
      world([{ id: "/spread", cmd: "x", cpus: 0.1, mem: 64, instances: 4, constraints: [["hostname", "UNIQUE"]] }], [{ atSeconds: 20, type: "remove-agents", class: "a", count: 1 }]),
    );
    expect(problems).toEqual([expect.stringMatching(/^marathon app m\/spread: 3 of 4 instances running \d+ s after the faults ended/)]);
    // Not before the slack after the removal (the end of the last fault) ran out.
    expect(atMs!).toBeGreaterThan(20_000 + MARATHON_CONVERGENCE_SLACK_MS);
  });

  it("counts an agent cut by two overlapping partitions as cut until the later one heals", async () => {
    // Both partitions take the newest agent of class a. The short one heals at 60 s; the agent stays
    // cut until 220 s, so the fourth /spread instance (one per host) has nowhere to go until then.
    // That is a fault lasting, not an app failing to converge after the faults ended.
    const { problems, events } = await checked(
      world(
        [{ id: "/spread", cmd: "x", cpus: 0.1, mem: 64, instances: 4, constraints: [["hostname", "UNIQUE"]] }],
        [
          { atSeconds: 20, type: "partition-agents", class: "a", count: 1, durationSeconds: 200 },
          { atSeconds: 30, type: "partition-agents", class: "a", count: 1, durationSeconds: 30 },
        ],
      ),
    );
    const cuts = events.filter((e) => e.type === "partition" || e.type === "partition-healed").map((e) => [e.type, e.t, e.agents]);
    expect(cuts).toEqual([
      ["partition", 20_000, ["agent-a-1"]],
      ["partition", 30_000, ["agent-a-1"]],
      ["partition-healed", 60_000, ["agent-a-1"]],
      ["partition-healed", 220_000, ["agent-a-1"]],
    ]);
    expect(problems).toEqual([]);
  });

  it("puts a small Marathon workload in every fault scenario, and a seed passes with it", async () => {
    const scenario = faultScenario(3, { seconds: 300 });
    expect(scenario.frameworks.find((f) => f.kind === "marathon")?.marathon?.apps?.length).toBe(2);
    const outcome = await runCheck(3, { seconds: 300 });
    expect(outcome).toMatchObject({ ok: true, seed: 3 });
  });
});
