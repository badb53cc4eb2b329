import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { BatchCore } from "../../frameworks/batch/core.ts";
import { SimCluster, type SimLogEvent } from "../../sim/cluster.ts";
import { ScenarioError, validateScenario, type Scenario } from "../../sim/scenario.ts";
import { BatchSimFramework } from "../../sim/workloads/batch.ts";

function workload(seed: number): Scenario {
  return {
    seed,
    endSeconds: 400,
    cluster: { agentClasses: { std: { count: 3, resources: "cpus:4;mem:8192" } } },
    frameworks: [
      {
        name: "etl",
        kind: "batch",
        role: "batch",
        refuseSeconds: 2,
        jobs: {
          count: 20,
          arrival: { poisson: { ratePerSecond: 0.2 } },
          tasksPerJob: { dist: "uniform", min: 1, max: 6 },
          cpus: { dist: "empirical", values: [0.5, 1, 2], weights: [2, 1, 1] },
          mem: 512,
          durationSeconds: { dist: "exp", meanSeconds: 10 },
          failureRate: 0.2,
          maxRetries: 8,
        },
      },
      {
        name: "slowpoke",
        kind: "batch",
        role: "other",
        jobs: { count: 2, arrival: { at: 5 }, tasksPerJob: 2, cpus: 0.5, mem: 256, durationSeconds: 100, timeoutSeconds: 30 },
      },
    ],
  };
}

async function run(scenario: Scenario): Promise<{ cluster: SimCluster; events: SimLogEvent[] }> {
  const events: SimLogEvent[] = [];
  const cluster = new SimCluster(validateScenario(scenario), { eventLog: (e) => void events.push(e) });
  await cluster.run();
  return { cluster, events };
}

function hash(events: SimLogEvent[]): string {
  const h = createHash("sha256");
  for (const e of events) h.update(`${JSON.stringify(e)}\n`);
  return h.digest("hex");
}

describe("batch frameworks in the simulator", () => {
  it("runs a Poisson job workload on the real batch core: retried failures, completed jobs, timed-out jobs killed", async () => {
    const { cluster, events } = await run(workload(3));
    const etl = cluster.frameworks.get("etl") as BatchSimFramework;
    const slow = cluster.frameworks.get("slowpoke") as BatchSimFramework;
    // The very framework of frameworks/batch, not a model of it.
    expect(etl).toBeInstanceOf(BatchSimFramework);
    expect(etl.batch!.core).toBeInstanceOf(BatchCore);

    expect(etl.jobStats).toEqual({ submitted: 20, completed: 20, failed: 0, timedOut: 0, cancelled: 0, refused: 0 });
    expect(slow.jobStats).toEqual({ submitted: 2, completed: 0, failed: 0, timedOut: 2, cancelled: 0, refused: 0 });
    const etlTasks = etl.batch!.core.jobList().reduce((n, j) => n + j.tasks, 0);
    const s = cluster.stats;
    // Every etl task finished; the slowpoke's four ran and were killed at the timeout.
    expect(s.submitted).toBe(etlTasks + 4);
    expect(s.completed).toBe(etlTasks);
    expect(s.failed).toBeGreaterThan(0);
    expect(s.retried).toBe(s.failed);
    expect(s.abandoned).toBe(0);
    expect(s.waitsMs).toHaveLength(etlTasks + 4);
    expect(s.launched).toBe(etlTasks + 4 + s.failed);

    const ended = events.filter((e) => e.type === "batch-job-ended" && e.fw === "slowpoke");
    expect(ended.map((e) => [e.outcome, e.t])).toEqual([
      ["timed-out", 35_000],
      ["timed-out", 35_000],
    ]);
    const killed = events.filter((e) => e.type === "status" && e.fw === "slowpoke" && e.state === "TASK_KILLED");
    expect(killed).toHaveLength(4);
    // With nothing queued the frameworks suppress, and revive when work arrives.
    expect(events.some((e) => e.type === "suppress" && e.fw === "etl")).toBe(true);
    expect(events.some((e) => e.type === "revive" && e.fw === "etl")).toBe(true);
    // Job arrivals are spread out (Poisson, mean gap 5 s), not all at once.
    const arrivals = events.filter((e) => e.type === "batch-job-submitted" && e.fw === "etl").map((e) => e.t);
    expect(arrivals).toHaveLength(20);
    expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThan(30_000);
    await cluster.shutdown();
  }, 60_000);

  it("runs two frameworks' tasks of the same id on one agent: both batch frameworks give their first task the same id", async () => {
    const job = { count: 1, arrival: { at: 1 }, tasksPerJob: 1, cpus: 0.5, mem: 256, durationSeconds: 10 };
    const { cluster, events } = await run({
      seed: 1,
      endSeconds: 120,
      cluster: { agentClasses: { std: { count: 1, resources: "cpus:4;mem:8192" } } },
      frameworks: [
        { name: "etl", kind: "batch", role: "batch", jobs: job },
        { name: "slowpoke", kind: "batch", role: "other", jobs: job },
      ],
    });
    const finished = (fw: string) => events.filter((e) => e.type === "status" && e.fw === fw && e.state === "TASK_FINISHED").map((e) => e.task);
    for (const name of ["etl", "slowpoke"]) {
      expect((cluster.frameworks.get(name) as BatchSimFramework).jobStats).toMatchObject({ submitted: 1, completed: 1 });
      expect(finished(name)).toHaveLength(1);
    }
    expect(finished("etl")).toEqual(finished("slowpoke"));
    await cluster.shutdown();
  }, 60_000);

  it("is deterministic: one seed gives a byte-identical event log, another seed a different one", async () => {
    const a = await run(workload(5));
    const b = await run(workload(5));
    const c = await run(workload(6));
    expect(a.events.length).toBeGreaterThan(200);
    expect(hash(b.events)).toBe(hash(a.events));
    expect(hash(c.events)).not.toBe(hash(a.events));
  }, 60_000);

  it("with offerHoldSeconds keeps offers for arriving jobs: the same jobs complete, on far fewer offers and REVIVEs", async () => {
    const scenario = (hold: boolean): Scenario => ({
      seed: 11,
      endSeconds: 600,
      cluster: { agentClasses: { std: { count: 40, resources: "cpus:8;mem:16384" } } },
      frameworks: [
        {
          name: "stream",
          kind: "batch",
          refuseSeconds: 60,
          ...(hold ? { offerHoldSeconds: 300, maxHeldOffers: 20 } : {}),
          jobs: { count: 60, arrival: { poisson: { ratePerSecond: 0.2 } }, tasksPerJob: 4, cpus: 1, mem: 1024, durationSeconds: { dist: "exp", meanSeconds: 30 } },
        },
      ],
    });
    const plain = await run(scenario(false));
    const held = await run(scenario(true));
    for (const { cluster } of [plain, held]) {
      expect((cluster.frameworks.get("stream") as BatchSimFramework).jobStats).toEqual({ submitted: 60, completed: 60, failed: 0, timedOut: 0, cancelled: 0, refused: 0 });
    }
    const offers = (r: typeof plain) => r.cluster.master.core.counters.offersMade;
    const revives = (r: typeof plain) => r.events.filter((e) => e.type === "revive").length;
    expect(offers(held)).toBeLessThan(offers(plain) / 4);
    expect(revives(held)).toBeLessThan(revives(plain) / 4);
    await plain.cluster.shutdown();
    await held.cluster.shutdown();
  });

  it("draws job gaps from an empirical inter-arrival distribution", async () => {
    const { events } = await run({
      seed: 9,
      endSeconds: 300,
      cluster: { agentClasses: { std: { count: 1, resources: "cpus:8;mem:8192" } } },
      frameworks: [
        {
          name: "e",
          kind: "batch",
          jobs: { count: 12, arrival: { empirical: { interArrivalSeconds: [2, 15], weights: [3, 1] } }, tasksPerJob: 1, cpus: 0.1, mem: 16, durationSeconds: { dist: "empirical", values: [1, 3] } },
        },
      ],
    });
    const times = events.filter((e) => e.type === "batch-job-submitted").map((e) => e.t);
    expect(times).toHaveLength(12);
    const gaps = [times[0]!, ...times.slice(1).map((t, i) => t - times[i]!)];
    expect(new Set(gaps)).toEqual(new Set([2000, 15_000]));
    expect(events.filter((e) => e.type === "batch-job-ended" && e.outcome === "completed")).toHaveLength(12);
  });

  it("validates the shipped batch workload example", () => {
    const text = readFileSync(new URL("../../sim/workloads/examples/batch-jobs.json", import.meta.url), "utf8");
    expect(() => validateScenario(JSON.parse(text))).not.toThrow();
  });

  it("rejects bad batch frameworks naming the field and the rule", () => {
    let problems: string[] = [];
    try {
      validateScenario({
        seed: 1,
        endSeconds: 10,
        cluster: { agentClasses: { std: { count: 1, resources: "cpus:1;mem:1024" } } },
        frameworks: [
          {
            name: "a",
            kind: "batch",
            jobs: {
              count: 1.5,
              arrival: { poisson: { ratePerSecond: 0 }, at: 3 },
              tasksPerJob: { dist: "normal" },
              cpus: { dist: "uniform", min: 2, max: 1 },
              mem: { dist: "empirical", values: [], weights: [1] },
              durationSeconds: { dist: "empirical", values: [1, -2] },
              failureRate: 2,
              extra: true,
            },
          },
          { name: "b", kind: "batch" },
          { name: "c", kind: "batch", tasks: { count: 1 }, trace: { format: "google-2011", taskEvents: "nowhere/task_events.csv", machineShape: "cpus:0;mem:1", batchTask: "x.csv" } },
          { name: "d", kind: "batch", trace: { format: "azure", machineShape: "cpus:4;mem:1024" } },
          { name: "e", kind: "decliner", jobs: {}, offerHoldSeconds: 10 },
          { name: "f", kind: "batch", jobs: { count: 1, arrival: { empirical: { interArrivalSeconds: [0, 0] } }, tasksPerJob: 1, cpus: 1, mem: 1, durationSeconds: 1 } },
          { name: "g", kind: "batch", offerHoldSeconds: -1, maxHeldOffers: 0, jobs: { count: 1, arrival: { at: 0 }, tasksPerJob: 1, cpus: 1, mem: 1, durationSeconds: 1 } },
        ],
      });
    } catch (err) {
      expect(err).toBeInstanceOf(ScenarioError);
      problems = (err as ScenarioError).problems;
    }
    const f = "scenario.frameworks";
    expect(problems).toEqual(
      expect.arrayContaining([
        `${f}[0].jobs.extra: is not a known field (known: count, arrival, tasksPerJob, cpus, mem, disk, durationSeconds, failureRate, maxRetries, timeoutSeconds, failFast)`,
        `${f}[0].jobs.count: must be an integer`,
        `${f}[0].jobs.arrival: must be exactly one of { "poisson": { "ratePerSecond" } }, { "empirical": { "interArrivalSeconds": [...] } } or { "at": seconds }`,
        `${f}[0].jobs.tasksPerJob.dist: must be "uniform" or "empirical" (or give a number)`,
        `${f}[0].jobs.cpus.max: must be >= min`,
        `${f}[0].jobs.mem.values: must be a non-empty array of numbers`,
        `${f}[0].jobs.durationSeconds.values[1]: must be a finite number >= 0`,
        `${f}[0].jobs.failureRate: must be <= 1`,
        `${f}[1]: a batch framework needs exactly one of "jobs" (a synthetic workload) and "trace" (a trace to replay)`,
        `${f}[2].tasks: is not allowed for kind "batch" (give jobs or trace)`,
        `${f}[2].trace.taskEvents: no such file: nowhere/task_events.csv (relative paths are read from the current directory)`,
        `${f}[2].trace.batchTask: is not a file of format google-2011`,
        `${f}[2].trace.machineShape: must give cpus and mem > 0`,
        `${f}[3].trace.format: must be "google-2011" or "alibaba-2018"`,
        `${f}[4].offerHoldSeconds: is only allowed for kind "batch"`,
        `${f}[6].offerHoldSeconds: must be >= 0`,
        `${f}[6].maxHeldOffers: must be >= 1`,
        `${f}[4].jobs: is only allowed for kind "batch"`,
        `${f}[5].jobs.arrival.empirical.interArrivalSeconds: must not all be 0`,
      ]),
    );
  });
});
