import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { runScenario } from "../../sim/report.ts";
import { ScenarioError, validateScenario, type Scenario } from "../../sim/scenario.ts";
import { damaged, withValueAt } from "../harness/damage.ts";

/** The problems `validateScenario` names for `input` (none when it is valid). */
function problemsOf(input: unknown): string[] {
  try {
    validateScenario(input);
    return [];
  } catch (err) {
    expect(err).toBeInstanceOf(ScenarioError);
    return (err as ScenarioError).problems;
  }
}

function small(): Scenario {
  return {
    name: "two-by-two",
    seed: 11,
    endSeconds: 120,
    sampleIntervalSeconds: 5,
    cluster: { agentClasses: { std: { count: 2, resources: "cpus:4;mem:4096" } }, allocationIntervalMs: 1000 },
    frameworks: [
      { name: "small", kind: "tasks", role: "a", refuseSeconds: 2, tasks: { count: 4, cpus: 1, mem: 512, durationSeconds: 10, arrival: { at: 0 } } },
      { name: "large", kind: "tasks", role: "b", refuseSeconds: 2, tasks: { count: 4, cpus: 2, mem: 1024, durationSeconds: 20, arrival: { at: 0 } } },
    ],
  };
}

function randomised(seed: number): Scenario {
  return {
    seed,
    endSeconds: 300,
    cluster: { agentClasses: { std: { count: 3, resources: "cpus:4;mem:8192", mtbfSeconds: 400, mttrSeconds: 30 } } },
    network: { latency: { dist: "exp", minMs: 0.2, meanMs: 3 }, lossRate: 0.005 },
    frameworks: [
      { name: "jobs", kind: "tasks", tasks: { count: 60, cpus: 1, mem: 1024, durationSeconds: { dist: "exp", meanSeconds: 20 }, arrival: { poisson: { ratePerSecond: 0.3 } } } },
      { name: "hog", kind: "greedy", role: "other", tasks: { count: 5, cpus: 1, mem: 1, durationSeconds: { dist: "uniform", minSeconds: 5, maxSeconds: 40 }, arrival: { at: 30 } } },
      { name: "nope", kind: "decliner" },
    ],
  };
}

async function logHash(scenario: Scenario): Promise<{ hash: string; lines: number }> {
  const hash = createHash("sha256");
  let lines = 0;
  await runScenario(scenario, {
    eventLog: (e) => {
      hash.update(`${JSON.stringify(e)}\n`);
      lines++;
    },
  });
  return { hash: hash.digest("hex"), lines };
}

describe("runScenario", () => {
  it("runs a small known workload on the real shells: every task launched and completed, plausible waits", async () => {
    const events: Array<{ type: string; state?: unknown }> = [];
    const r = await runScenario(small(), { eventLog: (e) => void events.push(e) });
    expect(r.tasks).toMatchObject({ submitted: 8, launched: 8, completed: 8, failed: 0, queuedAtEnd: 0 });
    expect(r.waitSeconds.count).toBe(8);
    // 12 cpus of demand on 8: some tasks wait for a 10 s or 20 s task to end, none much longer.
    expect(r.waitSeconds.p50).toBeLessThan(5);
    expect(r.waitSeconds.max).toBeGreaterThanOrEqual(9);
    expect(r.waitSeconds.max).toBeLessThan(35);
    expect(r.offers.made).toBeGreaterThan(0);
    expect(r.utilization.samples.length).toBe(24);
    expect(Math.max(...r.utilization.samples.map((s) => s.utilization.cpus ?? 0))).toBeGreaterThanOrEqual(0.75);
    expect(r.utilization.samples.at(-1)!.utilization.cpus).toBe(0);
    expect(Object.keys(r.roles).sort()).toEqual(["a", "b"]);
    expect(events.filter((e) => e.type === "launch")).toHaveLength(8);
    expect(events.filter((e) => e.type === "status" && e.state === "TASK_FINISHED")).toHaveLength(8);
    expect(events.some((e) => e.type === "offer")).toBe(true);
  });

  it("gives byte-identical event logs for one seed, and different ones for another seed", async () => {
    const one = await logHash(randomised(5));
    const again = await logHash(randomised(5));
    const other = await logHash(randomised(6));
    expect(one.lines).toBeGreaterThan(100);
    expect(again).toEqual(one);
    expect(other.hash).not.toBe(one.hash);
  });

  it("gives the same event log whether messages travel as bytes or as checked messages (the default)", async () => {
    const asMessages = await logHash(randomised(5));
    const asBytes = await logHash({ ...randomised(5), network: { ...randomised(5).network, wire: "bytes" } });
    const explicit = await logHash({ ...randomised(5), network: { ...randomised(5).network, wire: "messages" } });
    expect(asMessages.lines).toBeGreaterThan(100);
    expect(asBytes).toEqual(asMessages);
    expect(explicit).toEqual(asMessages);
  });

  it("refuses an unknown wire form", () => {
    expect(() => validateScenario({ ...small(), network: { wire: "json" } })).toThrow(/scenario\.network\.wire: must be one of messages, bytes/);
  });

  it("rejects a bad scenario before running, naming each field and rule", async () => {
    const bad = {
      seed: -1,
      endSeconds: 10,
      cluster: { agentClasses: { std: { count: 1, resources: "cpus:oops" } } },
      frameworks: [
        { name: "x", kind: "tasks", tasks: { count: 1, cpus: 0, mem: 1, durationSeconds: { dist: "normal" }, arrival: {} } },
        { name: "x", kind: "decliner", tasks: {} },
      ],
      events: [{ atSeconds: 1, type: "fail-agents", class: "gpu", count: 1 }],
      extra: true,
    };
    let error: unknown;
    try {
      await runScenario(bad);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ScenarioError);
    const problems = (error as ScenarioError).problems;
    expect(problems).toEqual(
      expect.arrayContaining([
        "scenario.extra: is not a known field (known: name, seed, endSeconds, sampleIntervalSeconds, cluster, network, frameworks, events)",
        "scenario.seed: must be >= 0",
        "scenario.frameworks[0].tasks.cpus: must be > 0",
        'scenario.frameworks[0].tasks.durationSeconds.dist: must be "exp" or "uniform" (or give a number of seconds)',
        'scenario.frameworks[1].name: must be unique ("x" is used twice)',
        "scenario.frameworks[1].tasks: is not allowed for a decliner",
        'scenario.events[0].class: must name an agent class of scenario.cluster.agentClasses, got "gpu"',
      ]),
    );
    expect(problems.some((p) => p.startsWith("scenario.cluster.agentClasses.std.resources: is not valid Mesos resource text"))).toBe(true);
    expect(problems.some((p) => p.startsWith("scenario.frameworks[0].tasks.arrival: must be"))).toBe(true);
    expect((error as Error).message).toContain("scenario.frameworks[0].tasks.cpus: must be > 0");
  });

  it("checks master failovers against the number of masters, naming the field and the rule", () => {
    const base = { seed: 1, endSeconds: 60, cluster: { agentClasses: { std: { count: 1, resources: "cpus:1;mem:512" } } }, frameworks: [{ name: "d", kind: "decliner" }] };
    expect(problemsOf({ ...base, events: [{ atSeconds: 5, type: "master-failover" }] })).toEqual([
      "scenario.events[0].downSeconds: is required with a single master (scenario.cluster.masters is 1): without a standby or a restart the cluster has no master for the rest of the run",
    ]);
    expect(problemsOf({ ...base, events: [{ atSeconds: 5, type: "master-failover", downSeconds: 10 }] })).toEqual([]);
    expect(problemsOf({ ...base, cluster: { ...base.cluster, masters: 2 }, events: [{ atSeconds: 5, type: "master-failover" }] })).toEqual([]);
    expect(problemsOf({ ...base, cluster: { ...base.cluster, masters: 0 }, events: [{ atSeconds: -1, type: "master-failover", downSeconds: 0, class: "std" }] })).toEqual([
      "scenario.cluster.masters: must be >= 1",
      "scenario.events[0].class: is not a known field (known: atSeconds, type, downSeconds)",
      "scenario.events[0].atSeconds: must be >= 0",
      "scenario.events[0].downSeconds: must be > 0",
    ]);
    expect(problemsOf({ ...base, cluster: { ...base.cluster, masters: 10 } })).toEqual(["scenario.cluster.masters: must be <= 9"]);
  });

  it("checks the agent ping settings, naming the field and the rule", () => {
    const cluster = { agentClasses: { std: { count: 1, resources: "cpus:1;mem:512" } }, agentPingIntervalMs: 0, maxMissedPings: 1.5 };
    const problems = problemsOf({ seed: 1, endSeconds: 60, cluster, frameworks: [{ name: "d", kind: "decliner" }] });
    expect(problems).toEqual([
      "scenario.cluster.agentPingIntervalMs: must be >= 1 (ms; a shorter interval fires so many events the run never ends)",
      "scenario.cluster.maxMissedPings: must be an integer",
    ]);
  });

  it("puts a floor under the intervals that drive events (1 ms) and under an agent's MTBF (1 s): tinier values would make a run endless", () => {
    const problems = (cluster: Record<string, unknown>, cls: Record<string, unknown> = {}): string[] =>
      problemsOf({ seed: 1, endSeconds: 60, cluster: { agentClasses: { std: { count: 1, resources: "cpus:1;mem:512", ...cls } }, ...cluster }, frameworks: [{ name: "d", kind: "decliner" }] });
    expect(problems({ allocationIntervalMs: 1e-9, agentPingIntervalMs: 0.5 }, { mtbfSeconds: 1e-9 })).toEqual([
      "scenario.cluster.allocationIntervalMs: must be >= 1 (ms; a shorter interval fires so many events the run never ends)",
      "scenario.cluster.agentPingIntervalMs: must be >= 1 (ms; a shorter interval fires so many events the run never ends)",
      "scenario.cluster.agentClasses.std.mtbfSeconds: must be >= 1 (s; an agent failing more often fails before it has registered, and the run never ends)",
    ]);
    expect(problems({ allocationIntervalMs: 1, agentPingIntervalMs: 1 }, { mtbfSeconds: 1 })).toEqual([]);
  });

  it("checks the end of a class's random failures and set-network events, naming the field and the rule", () => {
    const base = { seed: 1, endSeconds: 60, frameworks: [{ name: "d", kind: "decliner" }] };
    const cls = (extra: Record<string, unknown>) => ({ agentClasses: { std: { count: 1, resources: "cpus:1;mem:512", ...extra } } });
    expect(problemsOf({ ...base, cluster: cls({ mtbfSeconds: 100, failuresUntilSeconds: 30 }) })).toEqual([]);
    expect(problemsOf({ ...base, cluster: cls({ mtbfSeconds: 100, failuresUntilSeconds: -1 }) })).toEqual(["scenario.cluster.agentClasses.std.failuresUntilSeconds: must be >= 0"]);
    expect(problemsOf({ ...base, cluster: cls({ failuresUntilSeconds: 30 }) })).toEqual([
      "scenario.cluster.agentClasses.std.failuresUntilSeconds: needs mtbfSeconds (it ends the class's random failures, and without an MTBF there are none)",
    ]);
    const events = (...e: unknown[]) => problemsOf({ ...base, cluster: cls({}), events: e });
    expect(events({ atSeconds: 30, type: "set-network", lossRate: 0, duplicateRate: 0 }, { atSeconds: 40, type: "set-network", latency: { dist: "fixed", ms: 2 } })).toEqual([]);
    expect(
      events(
        { atSeconds: 30, type: "set-network" },
        { atSeconds: 30, type: "set-network", lossRate: 2, duplicateRate: "x", latency: { dist: "fixed" }, class: "std" },
        { atSeconds: 60, type: "set-network", lossRate: 0 },
      ),
    ).toEqual([
      "scenario.events[0]: a set-network event must give at least one of latency, lossRate and duplicateRate",
      "scenario.events[1].class: is not a known field (known: atSeconds, type, latency, lossRate, duplicateRate)",
      "scenario.events[1].lossRate: must be <= 1",
      "scenario.events[1].duplicateRate: must be a finite number",
      "scenario.events[1].latency.ms: is required",
      "scenario.events[2].atSeconds: must be < scenario.endSeconds (60): the run ends before it",
    ]);
  });

  it("refuses agent attributes the agents could not parse, naming the class, before running", async () => {
    const withAttributes = (attributes: string): unknown => ({ ...small(), cluster: { ...small().cluster, agentClasses: { std: { count: 2, resources: "cpus:4;mem:4096", attributes } } } });
    const problems = async (input: unknown): Promise<string[]> => {
      try {
        await runScenario(input);
        return [];
      } catch (err) {
        expect(err).toBeInstanceOf(ScenarioError);
        return (err as ScenarioError).problems;
      }
    };
    expect(await problems(withAttributes("rack"))).toEqual(['scenario.cluster.agentClasses.std.attributes: is not valid Mesos attribute text (invalid agent attribute "rack": expected "name:value" (missing ":"))']);
    expect(await problems(withAttributes("rack:r1;:x"))).toEqual(['scenario.cluster.agentClasses.std.attributes: is not valid Mesos attribute text (invalid agent attribute ":x": empty name)']);
    expect(await problems(withAttributes("rack:r1;rack:r2"))).toEqual(['scenario.cluster.agentClasses.std.attributes: is not valid Mesos attribute text (invalid agent attribute "rack:r2": duplicate name "rack")']);
    expect(() => validateScenario(withAttributes("rack:r1; zone:a;"))).not.toThrow();
  });

  it("refuses a quota the master's PUT /quota would refuse (the run would otherwise go on without it)", () => {
    const withQuota = (quota: unknown): unknown => ({ ...small(), cluster: { ...small().cluster, quota } });
    // The words are the allocator's own (a scratch one checks each quota).
    expect(problemsOf(withQuota({ a: { guarantees: { cpus: 10 }, limits: { cpus: 1 } } }))).toEqual(["scenario.cluster.quota.a: guarantees.cpus (10) exceeds limits.cpus (1)"]);
    expect(problemsOf(withQuota({ "a/b": { guarantees: { cpus: 1 } } }))).toEqual(["scenario.cluster.quota.a/b: quota is set per top-level role; 'a/b' is nested"]);
    expect(problemsOf(withQuota({ a: { limits: { "cpu s": 1 } } }))).toEqual(["scenario.cluster.quota.a: limits: invalid resource name 'cpu s': use only letters, digits, '_', '.' or '-'"]);
    expect(problemsOf(withQuota({ a: { guarantees: { cpus: 1e308 } } }))).toEqual(["scenario.cluster.quota.a: guarantees.cpus must be at most 9007199254740, got 1e+308"]);
    expect(problemsOf(withQuota({ a: { limits: { ports: 5 } } }))).toEqual(["scenario.cluster.quota.a: limits.ports: quota is set on scalar resources only; 'ports' is a ranges resource"]);
    expect(problemsOf(withQuota({ a: { guarantees: { cpus: -1 } } }))).toEqual(["scenario.cluster.quota.a.guarantees.cpus: must be >= 0"]);
    expect(problemsOf(withQuota({ a: { guarantees: { cpus: 2, mem: 1024 }, limits: { cpus: 2 } } }))).toEqual([]);
  });

  it("refuses events, framework starts and Marathon actions at or after endSeconds (they would never happen)", () => {
    const scenario = {
      ...small(),
      frameworks: [
        ...small().frameworks,
        { name: "late", kind: "decliner", startSeconds: 120 },
        { name: "web", kind: "marathon", marathon: { apps: [{ id: "/web", cmd: "serve", cpus: 0.1, mem: 32, instances: 1 }], actions: [{ atSeconds: 200, type: "scale", appId: "/web", instances: 2 }] } },
      ],
      events: [
        { atSeconds: 119, type: "add-agents", class: "std", count: 1 },
        { atSeconds: 120, type: "fail-agents", class: "std", count: 1 },
        { atSeconds: 500, type: "stop-framework", name: "small" },
      ],
    };
    const problems = problemsOf(scenario);
    expect(problems).toEqual([
      "scenario.frameworks[2].startSeconds: must be < scenario.endSeconds (120): the run ends before the framework starts",
      "scenario.frameworks[3].marathon.actions[0].atSeconds: must be < scenario.endSeconds (120): the run ends before it",
      "scenario.events[1].atSeconds: must be < scenario.endSeconds (120): the run ends before it",
      "scenario.events[2].atSeconds: must be < scenario.endSeconds (120): the run ends before it",
    ]);
  });

  it("refuses unknown fields in latencies, task durations and arrivals, and an arrival that gives both forms", () => {
    const base = small();
    const scenario = {
      ...base,
      network: { latency: { dist: "exp", minMs: 0.5, meanMs: 2, maxMs: 9 } },
      frameworks: [
        { ...base.frameworks[0]!, tasks: { ...base.frameworks[0]!.tasks!, durationSeconds: { dist: "exp", meanSeconds: 5, maxSeconds: 9 }, arrival: { poisson: { ratePerSecond: 1, burst: 3 } } } },
        { ...base.frameworks[1]!, tasks: { ...base.frameworks[1]!.tasks!, arrival: { at: 0, poisson: { ratePerSecond: 1 } } } },
        { name: "c", kind: "tasks", tasks: { count: 1, cpus: 1, mem: 1, durationSeconds: 1, arrival: { at: 0, every: 5 } } },
      ],
    };
    const problems = problemsOf(scenario);
    expect(problems).toEqual([
      "scenario.network.latency.maxMs: is not a known field (known: dist, minMs, meanMs)",
      "scenario.frameworks[0].tasks.durationSeconds.maxSeconds: is not a known field (known: dist, meanSeconds)",
      "scenario.frameworks[0].tasks.arrival.poisson.burst: is not a known field (known: ratePerSecond)",
      'scenario.frameworks[1].tasks.arrival: must give one of "poisson" and "at", not both',
      "scenario.frameworks[2].tasks.arrival.every: is not a known field (known: poisson, at)",
    ]);
  });

  it("bounds the agents one add-agents event creates, as a class's starting count is bounded", () => {
    const events = [
      { atSeconds: 10, type: "add-agents", class: "std", count: 1e12 },
      { atSeconds: 20, type: "add-agents", class: "std", count: 1_000_000 },
      { atSeconds: 30, type: "remove-agents", class: "std", count: 1e12 },
    ];
    const problems = problemsOf({ ...small(), events });
    expect(problems).toEqual(["scenario.events[0].count: must be <= 1000000"]);
  });

  it("refuses a seed too large for seed + 1 to be another seed (a plan runs seed, seed + 1, ...)", () => {
    expect(2 ** 60 + 1).toBe(2 ** 60);
    expect(() => validateScenario({ ...small(), seed: 2 ** 60 })).toThrow(/scenario\.seed: must be <= 1000000000000000/);
    expect(() => validateScenario({ ...small(), seed: 1e15 })).not.toThrow();
  });

  it("validates the shipped examples", async () => {
    const { readFileSync } = await import("node:fs");
    for (const file of ["small-batch.json", "failures.json"]) {
      const text = readFileSync(new URL(`../../sim/examples/${file}`, import.meta.url), "utf8");
      expect(() => validateScenario(JSON.parse(text))).not.toThrow();
    }
  });
});

describe("validateScenario on damaged scenarios", () => {
  it("accepts a damaged example or refuses it with a ScenarioError naming problems, never anything else (property)", () => {
    const examples = ["small-batch.json", "failures.json", "marathon-racks.json"].map(
      (file) => JSON.parse(readFileSync(new URL(`../../sim/examples/${file}`, import.meta.url), "utf8")) as unknown,
    );
    fc.assert(
      fc.property(damaged(examples), ({ index, path, value }) => {
        try {
          validateScenario(withValueAt(examples[index], path, value));
        } catch (err) {
          expect(err).toBeInstanceOf(ScenarioError);
          expect((err as ScenarioError).problems.length).toBeGreaterThan(0);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
