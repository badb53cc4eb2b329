import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import vm from "node:vm";
import { describe, expect, it } from "vitest";
import { metricsOf, planScenario, validatePlanSpec } from "../../sim/plan.ts";
import { loadUplotAssets, renderHtmlReport } from "../../sim/report-html.ts";
import { runScenario, type SimResult } from "../../sim/report.ts";
import type { SimLogEvent } from "../../sim/cluster.ts";
import { ScenarioError, validateScenario, type Scenario } from "../../sim/scenario.ts";

const TERMINAL = new Set(["TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"]);

function problemsOf(input: unknown): string[] {
  try {
    validateScenario(input);
  } catch (err) {
    if (err instanceof ScenarioError) return err.problems;
    throw err;
  }
  return [];
}

function withMarathon(marathon: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    seed: 1,
    endSeconds: 100,
    cluster: { agentClasses: { a: { count: 2, resources: "cpus:4;mem:8192", attributes: "rack:r1" } } },
    frameworks: [{ name: "m", kind: "marathon", ...extra, marathon }],
  };
}

async function run(scenario: Scenario): Promise<{ result: SimResult; events: SimLogEvent[] }> {
  const events: SimLogEvent[] = [];
  const result = await runScenario(scenario, { eventLog: (e) => void events.push(e) });
  return { result, events };
}

function hash(events: SimLogEvent[]): string {
  const h = createHash("sha256");
  for (const e of events) h.update(`${JSON.stringify(e)}\n`);
  return h.digest("hex");
}

/** Tasks running after each event-log line, from the status lines (idempotent under duplicates). */
function runningOverTime(events: SimLogEvent[], fw: string): Array<{ t: number; running: Set<string> }> {
  const running = new Set<string>();
  const out: Array<{ t: number; running: Set<string> }> = [];
  for (const e of events) {
    if (e.type !== "status" || e.fw !== fw) continue;
    const task = String(e.task);
    if (e.state === "TASK_RUNNING") running.add(task);
    else if (TERMINAL.has(String(e.state))) running.delete(task);
    out.push({ t: e.t, running: new Set(running) });
  }
  return out;
}

describe("marathon scenarios: validation", () => {
  it("checks app specs with Marathon's own validation and names the scenario path of each problem", () => {
    const problems = problemsOf(withMarathon({ apps: [{ id: "/web", cmd: "serve", cpus: -1, instances: 2 }, { cmd: "no id" }] }));
    expect(problems.some((p) => p.startsWith("scenario.frameworks[0].marathon.apps[0].cpus:"))).toBe(true);
    expect(problems.some((p) => p.startsWith("scenario.frameworks[0].marathon.apps[1].id:"))).toBe(true);
  });

  it("refuses what the simulator cannot run, and actions that the API would refuse", () => {
    const problems = problemsOf(
      withMarathon(
        {
          apps: [{ id: "/web", cmd: "serve", healthChecks: [{ protocol: "TCP", portIndex: 0 }] }, { id: "/api", cmd: "api" }],
          actions: [
            { atSeconds: 5, type: "scale", appId: "/api", instances: 3 },
            { atSeconds: 20, type: "update", app: { id: "/nope", cmd: "x" } },
            { atSeconds: 30, type: "delete", appId: "/api" },
            { atSeconds: 40, type: "scale", appId: "/api", instances: 2 },
            { atSeconds: 50, type: "deploy", app: { id: "/web", cmd: "again" } },
            { atSeconds: 60, type: "scale", appId: "/web" },
            { atSeconds: 70, type: "restart", appId: "/web" },
          ],
          taskMttfSeconds: 0,
        },
        { startSeconds: 10 },
      ),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^scenario\.frameworks\[0\]\.marathon\.apps\[0\]\.healthChecks: is not simulated/),
        expect.stringMatching(/^scenario\.frameworks\[0\]\.marathon\.actions\[0\]\.atSeconds: must be >= the framework's startSeconds \(10\)/),
        expect.stringMatching(/^scenario\.frameworks\[0\]\.marathon\.actions\[1\]\.app\.id: must name an app that exists at that time/),
        expect.stringMatching(/^scenario\.frameworks\[0\]\.marathon\.actions\[3\]\.appId: must name an app that exists at that time/),
        expect.stringMatching(/^scenario\.frameworks\[0\]\.marathon\.actions\[4\]\.app\.id: names an app that exists at that time/),
        expect.stringMatching(/^scenario\.frameworks\[0\]\.marathon\.actions\[5\]\.instances: is required/),
        expect.stringMatching(/^scenario\.frameworks\[0\]\.marathon\.actions\[6\]\.type: must be one of deploy, update, scale, delete/),
        expect.stringMatching(/^scenario\.frameworks\[0\]\.marathon\.taskMttfSeconds: must be a finite number > 0/),
      ]),
    );
    // Only the marathon kind takes a marathon field; a marathon framework takes no tasks.
    expect(problemsOf({ ...withMarathon({}), frameworks: [{ name: "t", kind: "decliner", marathon: {} }] })).toEqual([expect.stringMatching(/^scenario\.frameworks\[0\]\.marathon: is only allowed for kind "marathon"/)]);
    expect(problemsOf({ ...withMarathon({}), frameworks: [{ name: "m", kind: "marathon" }] })).toEqual([expect.stringMatching(/^scenario\.frameworks\[0\]\.marathon: is required/)]);
  });

  it("accepts the shipped example and its targets", () => {
    const scenario = validateScenario(JSON.parse(readFileSync("sim/examples/marathon-racks.json", "utf8")));
    expect(scenario.frameworks[0]!.kind).toBe("marathon");
    expect(() => validatePlanSpec(JSON.parse(readFileSync("sim/examples/marathon-racks.targets.json", "utf8")), scenario)).not.toThrow();
  });

  it("checks fail-rack events against the racks of the agent classes", () => {
    const events = [
      { atSeconds: 10, type: "fail-rack", rack: "r1", downSeconds: 5 },
      { atSeconds: 20, type: "fail-rack", rack: "r9" },
      { atSeconds: 30, type: "fail-rack", rack: "r1", downSeconds: -1 },
    ];
    const problems = problemsOf({ ...withMarathon({}), events });
    expect(problems).toEqual([
      expect.stringMatching(/^scenario\.events\[1\]\.rack: must name a rack of an agent class \(attribute rack:<name>; known: r1\), got "r9"/),
      "scenario.events[2].downSeconds: must be > 0",
    ]);
  });
});

describe("marathon frameworks in the simulator", () => {
  const rolling: Scenario = {
    name: "rolling",
    seed: 11,
    endSeconds: 240,
    sampleIntervalSeconds: 5,
    cluster: {
      agentClasses: {
        a: { count: 2, resources: "cpus:4;mem:8192", attributes: "rack:r1" },
        b: { count: 2, resources: "cpus:4;mem:8192", attributes: "rack:r2" },
      },
    },
    frameworks: [
      {
        name: "marathon",
        kind: "marathon",
        role: "web",
        marathon: {
          apps: [
            {
              id: "/web",
              cmd: "serve --v1",
              cpus: 0.5,
              mem: 256,
              instances: 4,
              constraints: [["rack", "GROUP_BY", "2"]],
              upgradeStrategy: { minimumHealthCapacity: 0.5, maximumOverCapacity: 0 },
            },
            { id: "/huge", cmd: "x", cpus: 16, mem: 256, instances: 1 },
          ],
          actions: [
            { atSeconds: 60, type: "update", app: { id: "/web", cmd: "serve --v2" } },
            { atSeconds: 120, type: "scale", appId: "/web", instances: 6 },
            { atSeconds: 150, type: "deploy", app: { id: "/api", cmd: "api", cpus: 1, mem: 512, instances: 2 } },
            { atSeconds: 200, type: "delete", appId: "/api" },
          ],
        },
      },
    ],
  };

  // One run serves the tests that only read it (CPU is scarce).
  let rollingRun: Promise<{ result: SimResult; events: SimLogEvent[] }> | undefined;
  const runRolling = () => (rollingRun ??= run(rolling));

  it("runs the real Marathon: deploys, a rolling update within the upgrade strategy, scale and delete, each timed", async () => {
    const { result, events } = await runRolling();
    const web = result.marathon.apps.find((a) => a.appId === "/web")!;
    expect(web.actions.map((a) => [a.type, a.outcome])).toEqual([
      ["deploy", "reached"],
      ["update", "reached"],
      ["scale", "reached"],
    ]);
    for (const a of web.actions) expect(a.reachedAfterSeconds).toBeGreaterThanOrEqual(0);
    expect(web).toMatchObject({ instances: 6, running: 6, deleted: false, queue: null });
    // GROUP_BY rack over 2 racks: the instances are spread evenly.
    const launches = events.filter((e) => e.type === "launch" && e.app === "/web");
    const hostOf = new Map(launches.map((e) => [String(e.task), String(e.host)]));
    const timeline = runningOverTime(events, "marathon");
    const finalWeb = [...timeline[timeline.length - 1]!.running].filter((t) => hostOf.has(t));
    const perRack = new Map<string, number>();
    for (const t of finalWeb) perRack.set(hostOf.get(t)!.split("-")[1]!, (perRack.get(hostOf.get(t)!.split("-")[1]!) ?? 0) + 1);
    expect([...perRack.values()]).toEqual([3, 3]);

    // The rolling update: the v1 tasks are all replaced by v2 tasks, and while it rolls at least
    // minimumHealthCapacity x 4 = 2 instances keep running and never more than 4 (no over-capacity).
    const updateMs = 60_000;
    const v1 = new Set(launches.filter((e) => e.t < updateMs).map((e) => String(e.task)));
    expect(v1.size).toBe(4);
    const killed = events.filter((e) => e.type === "status" && e.state === "TASK_KILLED" && v1.has(String(e.task)));
    expect(new Set(killed.map((e) => e.task)).size).toBe(4);
    const reached = updateMs + web.actions[1]!.reachedAfterSeconds! * 1000;
    const during = timeline.filter((s) => s.t >= updateMs && s.t <= reached).map((s) => [...s.running].filter((t) => hostOf.has(t)).length);
    expect(during.length).toBeGreaterThan(0);
    expect(Math.min(...during)).toBeGreaterThanOrEqual(2);
    expect(Math.max(...during)).toBeLessThanOrEqual(4);

    // The deleted app: deployed, reached, deleted, its tasks killed.
    const api = result.marathon.apps.find((a) => a.appId === "/api")!;
    expect(api).toMatchObject({ deleted: true, instances: 0, running: 0 });
    expect(api.actions.map((a) => [a.type, a.outcome])).toEqual([
      ["deploy", "reached"],
      ["delete", "reached"],
    ]);
    // Samples follow the instance counts: 4 wanted before the scale, 6 after.
    expect(web.samples.find(([t]) => t === 100)).toEqual([100, 4, 4]);
    expect(web.samples.find(([t]) => t === 180)).toEqual([180, 6, 6]);
  });

  it("reports an app it could not place with the reasons of Marathon's launch queue", async () => {
    const { result } = await runRolling();
    const huge = result.marathon.apps.find((a) => a.appId === "/huge")!;
    expect(huge.running).toBe(0);
    expect(huge.queue?.count).toBe(1);
    expect(huge.queue?.rejectSummary.map((r) => r.reason)).toEqual(["InsufficientCpus"]);
    const unplaced = result.marathon.unplaced;
    expect(unplaced.map((u) => u.appId)).toEqual(["/huge"]);
    expect(unplaced[0]!.reasons[0]).toMatch(/no agent class is large enough: an instance needs cpus 16/);
    expect(unplaced[0]!.reasons.some((r) => /^InsufficientCpus \(not enough cpus\): \d+ of \d+ offers$/.test(r))).toBe(true);
    // The framework's entry in the report's unschedulable list carries them.
    expect(result.unschedulable).toEqual([expect.objectContaining({ framework: "marathon", reasons: [expect.stringMatching(/^\/huge: 0 of 1 instances running; no agent class is large enough/)] })]);
  });

  it("gives byte-identical event logs for one seed with a marathon workload, and different ones for another seed", async () => {
    const a = await runRolling();
    const b = await run(rolling);
    const c = await run({ ...rolling, seed: 12 });
    expect(a.events.some((e) => e.type === "marathon-deployment")).toBe(true);
    expect(hash(a.events)).toBe(hash(b.events));
    expect(hash(c.events)).not.toBe(hash(a.events));
  });

  it("gives the same event log with a marathon workload whether messages travel as bytes or as checked messages", async () => {
    const asMessages = await runRolling();
    const asBytes = await run({ ...rolling, network: { wire: "bytes" } });
    expect(asBytes.events.length).toBe(asMessages.events.length);
    expect(hash(asBytes.events)).toBe(hash(asMessages.events));
  });

  it("shows the apps in the HTML report: instances over time, each action's time, the unplaced apps with reasons", async () => {
    const { result } = await runRolling();
    const page = renderHtmlReport(result, loadUplotAssets());
    expect(page).toContain("<h2>Marathon apps</h2>");
    expect(page).toContain("<h3>Unschedulable apps</h3>");
    expect(page).toMatch(/<td>marathon<\/td><td>\/huge<\/td><td>0 \/ 1<\/td><td>no agent class is large enough/);
    expect(page).toMatch(/update at 60 s: reached in [\d.]+ s/);
    const json = /<script type="application\/json" id="corral-data">([\s\S]*?)<\/script>/.exec(page)![1]!;
    const scripts = [...page.matchAll(/<script>\n([\s\S]*?)\n<\/script>/g)].map((m) => m[1]!);
    const charts: Array<{ id: string; data: unknown[][]; labels: string[] }> = [];
    vm.runInNewContext(scripts[1]!, {
      document: { getElementById: (id: string) => (id === "corral-data" ? { textContent: json } : page.includes(`id="${id}"`) ? { id, clientWidth: 900 } : null) },
      window: { addEventListener: () => undefined },
      setTimeout,
      clearTimeout,
      uPlot: function (opts: { series: Array<{ label: string }> }, d: unknown[][], el: { id: string }) {
        charts.push({ id: el.id, data: d, labels: opts.series.map((x) => x.label) });
      },
    });
    const chart = charts.find((c) => c.id === "c-marathon")!;
    expect(chart.labels).toEqual(["simulated seconds", "marathon/web", "marathon/web wanted", "marathon/huge", "marathon/huge wanted", "marathon/api", "marathon/api wanted"]);
    for (const column of chart.data) expect(column).toHaveLength(result.utilization.samples.length);
    // /api exists from 150 s to its deletion: no value before it was deployed.
    const t = chart.data[0] as number[];
    expect((chart.data[5] as Array<number | null>)[t.indexOf(100)]).toBeNull();
    expect((chart.data[5] as Array<number | null>)[t.indexOf(180)]).toBe(2);
  });

  it("refuses a write to an app that is still deploying (409) unless forced, as the API does", async () => {
    const scenario: Scenario = {
      seed: 3,
      endSeconds: 60,
      cluster: { agentClasses: { a: { count: 1, resources: "cpus:2;mem:4096" } } },
      frameworks: [
        {
          name: "m",
          kind: "marathon",
          marathon: {
            apps: [{ id: "/big", cmd: "x", cpus: 1, mem: 256, instances: 4 }],
            actions: [
              { atSeconds: 10, type: "scale", appId: "/big", instances: 3 },
              { atSeconds: 20, type: "scale", appId: "/big", instances: 2, force: true },
            ],
          },
        },
      ],
    };
    const { result, events } = await run(scenario);
    const big = result.marathon.apps[0]!;
    expect(big.actions.map((a) => [a.type, a.outcome])).toEqual([
      ["deploy", "superseded"],
      ["scale", "refused"],
      ["scale", "reached"],
    ]);
    expect(big.actions[1]!.error).toMatch(/^409: App is locked by one or more deployments/);
    expect(events.filter((e) => e.type === "marathon-action-refused")).toHaveLength(1);
    expect(big).toMatchObject({ instances: 2, running: 2 });
  });

  it("fails a rack: exactly its agents crash, Marathon replaces the lost instances on the other rack", async () => {
    const scenario: Scenario = {
      seed: 4,
      endSeconds: 200,
      cluster: {
        agentClasses: {
          a: { count: 2, resources: "cpus:4;mem:8192", attributes: "rack:r1;zone:z" },
          b: { count: 2, resources: "cpus:4;mem:8192", attributes: "rack:r2" },
        },
      },
      frameworks: [{ name: "m", kind: "marathon", marathon: { apps: [{ id: "/svc", cmd: "x", cpus: 1, mem: 256, instances: 4 }] } }],
      // Down beyond the master's ping timeout (75 s): Marathon learns of the loss from the master.
      events: [{ atSeconds: 30, type: "fail-rack", rack: "r1" }],
    };
    const { result, events } = await run(scenario);
    const rack = events.find((e) => e.type === "rack-failed")!;
    expect(rack.agents).toEqual(["agent-a-0", "agent-a-1"]);
    expect(events.filter((e) => e.type === "agent-failed").map((e) => e.agent)).toEqual(["agent-a-0", "agent-a-1"]);
    const svc = result.marathon.apps[0]!;
    expect(svc).toMatchObject({ instances: 4, running: 4 });
    const lostOnR1 = events.filter((e) => e.type === "launch" && String(e.host).startsWith("agent-a-") && e.t < 30_000).length;
    const after = events.filter((e) => e.type === "launch" && e.t > 30_000);
    expect(after.length).toBe(lostOnR1);
    for (const e of after) expect(String(e.host)).toMatch(/^agent-b-/);
  });

  it("exercises replacement with a task failure model, and a framework arriving late and leaving", async () => {
    const scenario: Scenario = {
      seed: 9,
      endSeconds: 300,
      sampleIntervalSeconds: 50,
      cluster: { agentClasses: { a: { count: 2, resources: "cpus:4;mem:8192" } } },
      frameworks: [
        { name: "flaky", kind: "marathon", role: "flaky", marathon: { taskMttfSeconds: 30, apps: [{ id: "/f", cmd: "x", cpus: 0.5, mem: 128, instances: 3 }] } },
        { name: "late", kind: "marathon", startSeconds: 50, marathon: { apps: [{ id: "/l", cmd: "x", cpus: 0.5, mem: 128, instances: 2 }] } },
      ],
      events: [{ atSeconds: 200, type: "stop-framework", name: "late" }],
    };
    const { result, events } = await run(scenario);
    const failed = events.filter((e) => e.type === "status" && e.fw === "flaky" && e.state === "TASK_FAILED");
    expect(failed.length).toBeGreaterThan(3);
    // Every failure was replaced: 3 first launches plus one per failure still to be replaced at most.
    expect(result.frameworks.flaky!.launched).toBeGreaterThanOrEqual(3 + failed.length - 3);
    expect(result.frameworks.flaky!.abandoned).toBe(0);
    // The late framework launches nothing before it starts, and its tasks are killed when it leaves.
    const lateLaunches = events.filter((e) => e.type === "launch" && e.fw === "late");
    expect(lateLaunches.length).toBe(2);
    for (const e of lateLaunches) expect(e.t).toBeGreaterThanOrEqual(50_000);
    // Torn down: the master kills its tasks, so only flaky's 3 x 0.5 of the 8 cpus are in use.
    const cpusAt = (t: number) => result.utilization.samples.find((s) => s.t === t)!.utilization.cpus!;
    expect(cpusAt(150)).toBeCloseTo(2.5 / 8, 5);
    expect(cpusAt(250)).toBeLessThanOrEqual(1.5 / 8 + 1e-9);
    expect(result.frameworks.late).toMatchObject({ stopped: true });
    expect(result.marathon.apps.find((a) => a.appId === "/l")).toMatchObject({ running: 0 });
    expect(result.marathon.unplaced.map((u) => u.framework)).not.toContain("late");
  });
});

describe("capacity planning for Marathon apps", () => {
  const spread: Scenario = {
    name: "spread",
    seed: 2,
    endSeconds: 60,
    cluster: { agentClasses: { std: { count: 1, resources: "cpus:2;mem:4096" } } },
    frameworks: [
      { name: "m", kind: "marathon", marathon: { apps: [{ id: "/svc", cmd: "x", cpus: 0.5, mem: 256, instances: 3, constraints: [["hostname", "UNIQUE"]] }] } },
    ],
  };

  it("finds the smallest cluster on which every app is placed (one instance per host: three hosts)", async () => {
    const plan = await planScenario(spread, { targets: { allMarathonAppsPlaced: true }, seeds: 1, search: { classes: { std: { min: 1, max: 4 } } } });
    expect(plan.recommendation?.counts).toEqual({ std: 3 });
    const two = plan.evaluated.find((p) => p.counts.std === 2)!;
    expect(two.checks).toEqual([expect.objectContaining({ target: "unplaced marathon instances", observed: 1, pass: false })]);
  });

  it("judges apps changed within the placement grace leniently, and refuses the target without a marathon framework", () => {
    const result = {
      endSeconds: 100,
      marathon: {
        apps: [
          { framework: "m", appId: "/old", actions: [{ atSeconds: 10 }] },
          { framework: "m", appId: "/new", actions: [{ atSeconds: 95 }] },
        ],
        unplaced: [
          { framework: "m", appId: "/old", instances: 3, running: 1, reasons: [] },
          { framework: "m", appId: "/new", instances: 4, running: 0, reasons: [] },
        ],
      },
      waitSeconds: { withNeverRun: { p50: 0, p90: 0, p99: 0 } },
      tasks: { queuedPastGrace: 0, abandoned: 0 },
      utilization: { mean: { cpus: 0.5 } },
    } as unknown as SimResult;
    expect(metricsOf(result).unplacedMarathonInstances).toBe(6);
    expect(metricsOf(result, 10).unplacedMarathonInstances).toBe(2);
    const tasksOnly = validateScenario({ ...spread, frameworks: [{ name: "d", kind: "decliner" }] });
    expect(() => validatePlanSpec({ targets: { allMarathonAppsPlaced: true } }, tasksOnly)).toThrow(/plan\.targets\.allMarathonAppsPlaced: the scenario has no framework of kind "marathon"/);
    expect(() => validatePlanSpec({ targets: { allMarathonAppsPlaced: true, placementGraceSeconds: 30 } }, validateScenario(spread))).not.toThrow();
  });
});
