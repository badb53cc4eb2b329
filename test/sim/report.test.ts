import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import vm from "node:vm";
import { afterAll, describe, expect, it, vi } from "vitest";
import { simCommand } from "../../sim/cli.ts";
import { SimCluster, type SimLogEvent } from "../../sim/cluster.ts";
import { formatSummary, runScenario, samplingIntervalSeconds, type SimResult } from "../../sim/report.ts";
import { loadUplotAssets, renderHtmlReport } from "../../sim/report-html.ts";
import { validateScenario, type Scenario } from "../../sim/scenario.ts";

const dir = mkdtempSync(join(tmpdir(), "corral-sim-report-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Crashes, a partition, loss and duplication, two roles: plenty of chances for an observer to disturb the run. */
function busy(seed: number): Scenario {
  return {
    name: "busy",
    seed,
    endSeconds: 240,
    cluster: { agentClasses: { std: { count: 3, resources: "cpus:4;mem:8192", mtbfSeconds: 300, mttrSeconds: 20 } }, roleWeights: { a: 2, b: 1 } },
    network: { latency: { dist: "exp", minMs: 0.2, meanMs: 3 }, lossRate: 0.005, duplicateRate: 0.005 },
    frameworks: [
      { name: "jobs", kind: "tasks", role: "a", tasks: { count: 60, cpus: 1, mem: 1024, durationSeconds: { dist: "exp", meanSeconds: 20 }, arrival: { poisson: { ratePerSecond: 0.4 } } } },
      { name: "hog", kind: "greedy", role: "b", tasks: { count: 5, cpus: 1, mem: 1, durationSeconds: 30, arrival: { at: 20 } } },
    ],
    events: [{ atSeconds: 100, type: "partition-agents", class: "std", count: 1, durationSeconds: 30 }],
  };
}

function hasher() {
  const hash = createHash("sha256");
  let lines = 0;
  return {
    log: (e: SimLogEvent) => {
      hash.update(`${JSON.stringify(e)}\n`);
      lines++;
    },
    done: () => ({ hash: hash.digest("hex"), lines }),
  };
}

function quiet() {
  const out: string[] = [];
  const log = vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
  const err = vi.spyOn(console, "error").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
  return { out, restore: () => (log.mockRestore(), err.mockRestore()) };
}

describe("sampling does not change the run", () => {
  it("gives the same event log with a 1 s interval, one sample in all, and no observer at all", async () => {
    const fine = hasher();
    const r1 = await runScenario(busy(9), { eventLog: fine.log, sampleIntervalSeconds: 1 });
    const coarse = hasher();
    const r2 = await runScenario(busy(9), { eventLog: coarse.log, maxSamples: 1 });
    // The bare cluster: no sampler and no recorder, only the log.
    const bare = hasher();
    const cluster = new SimCluster(validateScenario(busy(9)), { eventLog: bare.log });
    await cluster.run();
    await cluster.shutdown();

    expect(r1.utilization.samples).toHaveLength(240);
    expect(r2.utilization.samples).toHaveLength(1);
    const a = fine.done();
    expect(a.lines).toBeGreaterThan(500);
    expect(coarse.done()).toEqual(a);
    expect(bare.done()).toEqual(a);
    expect(r1.tasks).toEqual(r2.tasks);
    expect(r1.waitSeconds).toEqual(r2.waitSeconds);
    expect(r1.failures).toEqual(r2.failures);
  });

  it("defaults to min(60 s, endSeconds / 100) and caps the number of samples", () => {
    const s = validateScenario({ ...busy(1), endSeconds: 86_400 });
    expect(samplingIntervalSeconds(s)).toBe(60);
    expect(samplingIntervalSeconds({ ...s, endSeconds: 600 })).toBe(6);
    expect(samplingIntervalSeconds({ ...s, endSeconds: 50 })).toBe(1);
    expect(samplingIntervalSeconds(s, { maxSamples: 100 })).toBe(864);
    expect(samplingIntervalSeconds({ ...s, endSeconds: 600, sampleIntervalSeconds: 5 })).toBe(5);
    expect(samplingIntervalSeconds({ ...s, endSeconds: 600, sampleIntervalSeconds: 5 }, { sampleIntervalSeconds: 30 })).toBe(30);
    // 5 s over a day would be 17280 samples: the cap (2000) stretches the interval.
    expect(samplingIntervalSeconds({ ...s, sampleIntervalSeconds: 5 })).toBeCloseTo(43.2);
    expect(samplingIntervalSeconds({ ...s, endSeconds: 7 * 86_400 }, { sampleIntervalSeconds: 60 })).toBeCloseTo(302.4);
  });

  it("corral sim run writes the same event log with and without --html (and --sample-interval)", async () => {
    const file = join(dir, "busy.json");
    writeFileSync(file, JSON.stringify(busy(4)));
    const io = quiet();
    const plain = await simCommand(["run", file, "--events", join(dir, "plain.jsonl")]);
    const html = await simCommand(["run", file, "--events", join(dir, "html.jsonl"), "--html", join(dir, "r.html"), "--json", join(dir, "r.json"), "--sample-interval", "2"]);
    const bad = await simCommand(["run", file, "--sample-interval", "0"]);
    io.restore();
    expect([plain, html, bad]).toEqual([0, 0, 2]);
    expect(io.out.join("\n")).toContain("--sample-interval: must be a number > 0");
    const sha = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");
    expect(sha(join(dir, "html.jsonl"))).toBe(sha(join(dir, "plain.jsonl")));
    const page = readFileSync(join(dir, "r.html"), "utf8");
    const result = JSON.parse(readFileSync(join(dir, "r.json"), "utf8")) as SimResult;
    expect(result.sampling).toEqual({ intervalSeconds: 2, maxSamples: 2000, count: 120 });
    expect(embeddedData(page).result).toEqual(result);
  });
});

describe("the result's metrics", () => {
  const strand: Scenario = {
    name: "strand",
    seed: 3,
    endSeconds: 100,
    sampleIntervalSeconds: 10,
    cluster: { agentClasses: { std: { count: 2, resources: "cpus:4;mem:4096" } }, roleWeights: { a: 3, b: 1 } },
    frameworks: [
      // Two of these fill an agent's mem and leave 2 of its 4 cpus stranded, for the whole run.
      { name: "memhog", kind: "tasks", role: "a", tasks: { count: 4, cpus: 1, mem: 2048, durationSeconds: 1000, arrival: { at: 0 } } },
      { name: "huge", kind: "tasks", role: "b", tasks: { count: 2, cpus: 8, mem: 1024, durationSeconds: 5, arrival: { at: 0 } } },
      { name: "quick", kind: "tasks", role: "b", tasks: { count: 1, cpus: 0.1, mem: 1, durationSeconds: 1, arrival: { at: 0 } } },
    ],
    events: [{ atSeconds: 30, type: "fail-agents", class: "std", count: 1, downSeconds: 20 }],
  };

  it("reports stranded cpus, unschedulable work with its reason, jobs, shares against fair parts, and a failure with its recovery", async () => {
    const r = await runScenario(strand);
    expect(r.stranded.thresholds).toEqual({ cpus: 0.1, mem: 1 });
    // quick's tiny task may sit beside the mem hogs for a second; after that 2 cpus per agent are stranded.
    expect(r.utilization.samples.map((s) => s.stranded)).toEqual(Array.from({ length: 10 }, () => ({ cpus: 4, mem: 0 })));
    // Over time: 2 of 8 cpus stranded on each agent once its second mem hog runs (3 ms and 3.0 s)
    // except while the crashed agent is back and empty (50.0 to 52.0 s), and for the moments the
    // leftover cpus are offered (an offer counts as allocated): (2 * 100 + 2 * 95) / 100 = 3.9 cpus
    // at most, 0.4875 of the cluster. The samples, every 10 s, all saw 4.
    expect(r.stranded.mean.cpus).toBeLessThanOrEqual(3.9);
    expect(r.stranded.mean.cpus).toBeGreaterThan(3.88);
    expect(r.stranded.meanFraction.cpus).toBeLessThanOrEqual(0.4875);
    expect(r.stranded.meanFraction.cpus).toBeGreaterThan(0.485);
    expect(r.stranded.max).toEqual({ cpus: 4, mem: 0 });
    expect(r.unschedulable).toEqual([
      {
        framework: "huge",
        role: "b",
        queuedAtEnd: 2,
        abandoned: 0,
        reasons: [
          "no agent class is large enough: a task needs cpus 8, mem 1024; the largest agents have cpus 4, mem 4096",
          "2 tasks still queued at the end of the run (not enough free capacity in time)",
        ],
      },
    ]);
    expect(r.jobs).toEqual({ total: 3, completed: 1, failed: 0, timedOut: 2, cancelled: 0, refused: 0 });
    expect(r.frameworks.quick).toMatchObject({ launched: 1, finished: 1, job: "completed" });
    expect(r.frameworks.memhog).toMatchObject({ finished: 0, failed: 2, job: "timed-out" });
    // Role a's mem share over time, from the event log: half the cluster from its first offer
    // (3 ms) to 2.0 s, three quarters to 3.0 s, all of it to the agent's return at 50.0 s (the
    // crashed agent's tasks count until it is back), half until the relaunch at 52.0 s, then all:
    // (0.5 * 2 + 0.75 * 1 + 47 + 0.5 * 2 + 48) / 100 = 0.9775. Samples every 10 s all read 1.
    expect(r.utilization.samples.every((s) => s.shares.a === 1)).toBe(true);
    expect(r.roles.a).toMatchObject({ weight: 3, fairPart: 0.75, meanDominantShare: 0.9775, maxDominantShare: 1 });
    expect(r.roles.b!.fairPart).toBe(0.25);
    // The crash at 30 s takes two mem hogs; they run again once the agent is back at 50 s.
    expect(r.failures).toHaveLength(1);
    const f = r.failures[0]!;
    expect(f).toMatchObject({ kind: "crash", atSeconds: 30, agents: ["agent-std-1"], backAtSeconds: 50, downSeconds: 20, tasksLost: 2, tasksNotRelaunched: 0 });
    expect(f.recoverySeconds).toBeGreaterThanOrEqual(20);
    expect(f.recoverySeconds).toBeLessThan(25);
    expect(r.recovery).toMatchObject({ failures: 1, unrecovered: 0, maxRecoverySeconds: f.recoverySeconds });
    // Two huge tasks never ran: over all 7 submitted, p90 falls on them.
    expect(r.waitSeconds.neverRan).toBe(2);
    expect(r.waitSeconds.withNeverRun.p90).toBeNull();
    expect(r.waitSeconds.withNeverRun.p50).not.toBeNull();
    // The summary and the page say so beside the waits of the 5 that ran, not only the JSON.
    const w = r.waitSeconds.withNeverRun;
    const neverRan = `(5 tasks ran; 2 never did: over all 7 submitted p50 ${w.p50} s, p90 never, p99 never)`;
    expect(formatSummary(r)).toContain(`max ${r.waitSeconds.max} s ${neverRan}`);
    expect(renderHtmlReport(r, loadUplotAssets())).toContain(`mean ${r.waitSeconds.mean} ${neverRan}`);
  });

  it("counts tasks queued at the end past a placement grace apart from those that just arrived", async () => {
    const s: Scenario = {
      seed: 1,
      endSeconds: 60,
      cluster: { agentClasses: { std: { count: 1, resources: "cpus:2;mem:2048" } } },
      frameworks: [
        { name: "early", kind: "tasks", tasks: { count: 1, cpus: 4, mem: 64, durationSeconds: 5, arrival: { at: 0 } } },
        { name: "late", kind: "tasks", tasks: { count: 1, cpus: 4, mem: 64, durationSeconds: 5, arrival: { at: 55 } } },
      ],
    };
    const strict = await runScenario(s);
    const graced = await runScenario(s, { placementGraceSeconds: 10 });
    expect(strict.tasks).toMatchObject({ queuedAtEnd: 2, queuedPastGrace: 2 });
    expect(graced.tasks).toMatchObject({ queuedAtEnd: 2, queuedPastGrace: 1 });
    await expect(runScenario(s, { placementGraceSeconds: -1 })).rejects.toThrow("placementGraceSeconds: must be a finite number >= 0");
  });

  it("counts Marathon instances queued past the placement grace by the time their app was last changed", async () => {
    // /big never fits (8 cpus on a 4-cpu agent) and waits from the start; /web's two instances fill
    // the agent, and it is scaled to 5 a second before the end: 3 more wait, asked for just now.
    const s: Scenario = {
      seed: 1,
      endSeconds: 100,
      cluster: { agentClasses: { std: { count: 1, resources: "cpus:4;mem:4096" } } },
      frameworks: [
        {
          name: "mara",
          kind: "marathon",
          marathon: {
            apps: [
              { id: "/web", cmd: "x", cpus: 2, mem: 128, instances: 2 },
              { id: "/big", cmd: "x", cpus: 8, mem: 128, instances: 1 },
            ],
            actions: [{ atSeconds: 99, type: "scale", appId: "/web", instances: 5 }],
          },
        },
      ],
    };
    const strict = await runScenario(s);
    const graced = await runScenario(s, { placementGraceSeconds: 60 });
    expect(strict.tasks).toMatchObject({ queuedAtEnd: 4, queuedPastGrace: 4 });
    expect(graced.tasks).toMatchObject({ queuedAtEnd: 4, queuedPastGrace: 1 });
  });

  it("counts a batch framework's own jobs, and its smallest task size as the stranding threshold", async () => {
    const r = await runScenario({
      name: "batchy",
      seed: 2,
      endSeconds: 200,
      cluster: { agentClasses: { std: { count: 3, resources: "cpus:4;mem:8192" } } },
      frameworks: [
        { name: "b", kind: "batch", role: "x", jobs: { count: 6, arrival: { poisson: { ratePerSecond: 0.2 } }, tasksPerJob: 2, cpus: { dist: "uniform", min: 0.5, max: 2 }, mem: 1024, durationSeconds: 10 } },
        { name: "t", kind: "tasks", role: "y", tasks: { count: 2, cpus: 1, mem: 2048, durationSeconds: 5, arrival: { at: 0 } } },
      ],
    });
    expect(r.frameworks.b!.jobs).toEqual({ submitted: 6, completed: 6, failed: 0, timedOut: 0, cancelled: 0, refused: 0 });
    expect(r.frameworks.b!.job).toBeNull();
    expect(r.frameworks.b).toMatchObject({ launched: 12, finished: 12, failed: 0 });
    expect(r.frameworks.t!.job).toBe("completed");
    expect(r.jobs).toEqual({ total: 7, completed: 7, failed: 0, timedOut: 0, cancelled: 0, refused: 0 });
    expect(r.stranded.thresholds).toEqual({ cpus: 0.5, mem: 1024 });
  });

  it("counts a batch job the scenario's stop-framework ends as cancelled, so every submitted job has an outcome", async () => {
    // Two 1-cpu agents' worth of 15 s tasks, four of them: two run when the framework stops at 20 s.
    const r = await runScenario({
      name: "stopped",
      seed: 1,
      endSeconds: 60,
      cluster: { agentClasses: { std: { count: 1, resources: "cpus:2;mem:4096" } } },
      frameworks: [
        { name: "b", kind: "batch", stopSeconds: 20, jobs: { count: 1, arrival: { at: 0.001 }, tasksPerJob: 4, cpus: 1, mem: 64, durationSeconds: 15 } },
        { name: "done", kind: "batch", jobs: { count: 1, arrival: { at: 0.001 }, tasksPerJob: 1, cpus: 0.1, mem: 64, durationSeconds: 1 } },
      ],
    });
    expect(r.frameworks.b).toMatchObject({ stopped: true, finished: 2 });
    expect(r.frameworks.b!.jobs).toEqual({ submitted: 1, completed: 0, failed: 0, timedOut: 0, cancelled: 1, refused: 0 });
    expect(r.jobs).toEqual({ total: 2, completed: 1, failed: 0, timedOut: 0, cancelled: 1, refused: 0 });
  });

  it("counts and reports jobs a batch framework refuses (past its bounds), apart from the submitted ones", async () => {
    const r = await runScenario({
      name: "too-big",
      seed: 3,
      endSeconds: 30,
      cluster: { agentClasses: { std: { count: 1, resources: "cpus:4;mem:8192" } } },
      // More tasks in one job than the framework's maxTasksPerJob (100,000): refused at submission.
      frameworks: [{ name: "b", kind: "batch", jobs: { count: 2, arrival: { at: 1 }, tasksPerJob: 100_001, cpus: 0.1, mem: 32, durationSeconds: 1 } }],
    });
    expect(r.frameworks.b!.jobs).toEqual({ submitted: 0, completed: 0, failed: 0, timedOut: 0, cancelled: 0, refused: 2 });
    expect(r.jobs).toMatchObject({ total: 0, refused: 2 });
    expect(formatSummary(r)).toContain("jobs       0: 0 completed, 0 failed, 0 timed out; 2 refused by the framework");
  });

  it("puts the nearest-rank wait at every percent of the CDF: at 14% of 50 waits, the 7th smallest", async () => {
    // One agent, one task at a time: 50 distinct waits, read back off the event log.
    const running: number[] = [];
    const r = await runScenario(
      {
        name: "cdf",
        seed: 1,
        endSeconds: 120,
        cluster: { agentClasses: { std: { count: 1, resources: "cpus:1;mem:1024" } } },
        frameworks: [{ name: "f", kind: "tasks", tasks: { count: 50, cpus: 1, mem: 64, durationSeconds: 1, arrival: { at: 0 } } }],
      },
      { eventLog: (e) => void (e.type === "status" && e.state === "TASK_RUNNING" && running.push(e.t as number)) },
    );
    const waits = running.map((ms) => Math.round(ms * 10) / 10_000).sort((a, b) => a - b);
    expect(waits).toHaveLength(50);
    expect(new Set(waits).size).toBe(50);
    const cdf = r.waitSeconds.cdf;
    for (let i = 1; i <= 100; i++) expect(cdf[i]).toEqual([waits[Math.ceil((i * 50) / 100) - 1], i / 100]);
    expect(r.waitSeconds.p50).toBe(waits[24]);
  });

  it("averages utilization over time, not over the samples: a 20 s sample never lands on the cycle's busy 3 s", async () => {
    // Four 1-cpu agents, each running one 3 s task after another with a 1 s allocation gap: every
    // 4 s cycle is busy 3 s (all four agents together), so 75% of the cpus are used over the run.
    const cycle: Scenario = {
      name: "cycle",
      seed: 1,
      endSeconds: 200,
      cluster: { agentClasses: { std: { count: 4, resources: "cpus:1;mem:1024" } } },
      frameworks: [{ name: "f", kind: "tasks", tasks: { count: 400, cpus: 1, mem: 100, durationSeconds: 3, arrival: { at: 0 } } }],
    };
    const coarse = await runScenario(cycle, { sampleIntervalSeconds: 20 });
    const fine = await runScenario(cycle, { sampleIntervalSeconds: 0.1 });
    expect(coarse.tasks.completed).toBe(200);
    // The samples all fall in the gaps (the cluster is idle at every 20th second) ...
    expect(coarse.utilization.samples.map((s) => s.utilization.cpus)).toEqual(Array.from({ length: 10 }, () => 0));
    // ... but the mean is the time average: 200 tasks of 3 s (plus the messages' few ms) on 4 cpus over 200 s.
    expect(coarse.utilization.mean.cpus).toBeGreaterThanOrEqual(0.75);
    expect(coarse.utilization.mean.cpus).toBeLessThan(0.76);
    expect(coarse.utilization.max.cpus).toBe(1);
    expect(coarse.utilization.mean).toEqual(fine.utilization.mean);
    expect(coarse.utilization.max).toEqual(fine.utilization.max);
  });

  it("averages role shares and their distance from the weighted fair part over time, whatever the sampling", async () => {
    // Roles a (weight 1) and b (weight 3), one 1-cpu task each at a time per agent: with both
    // always waiting, DRF gives a one of the four agents and b three (the samples at 10 s show it).
    const weighted: Scenario = {
      name: "weighted",
      seed: 1,
      endSeconds: 200,
      cluster: { agentClasses: { std: { count: 4, resources: "cpus:1;mem:1024" } }, roleWeights: { a: 1, b: 3 } },
      frameworks: [
        { name: "fa", kind: "tasks", role: "a", tasks: { count: 400, cpus: 1, mem: 100, durationSeconds: 3, arrival: { at: 0 } } },
        { name: "fb", kind: "tasks", role: "b", tasks: { count: 400, cpus: 1, mem: 100, durationSeconds: 3, arrival: { at: 0 } } },
      ],
    };
    const coarse = await runScenario(weighted, { sampleIntervalSeconds: 20 });
    const fine = await runScenario(weighted, { sampleIntervalSeconds: 1 });
    // Every 20th second falls in the allocation gap of the 4 s cycle: the samples see nothing held.
    expect(coarse.utilization.samples.every((s) => (s.shares.a ?? 0) === 0 && (s.shares.b ?? 0) === 0)).toBe(true);
    expect(fine.utilization.samples[9]!.shares).toEqual({ a: 0.25, b: 0.75 });
    expect(coarse.roles).toEqual(fine.roles);
    // Between them the roles hold the whole cluster 3 s of every 4 (plus the offers in the gaps),
    // split near 1/4 and 3/4 (a little more for a while the first allocations settle).
    const a = coarse.roles.a!.meanDominantShare;
    const bShare = coarse.roles.b!.meanDominantShare;
    expect(a + bShare).toBeGreaterThanOrEqual(0.75);
    expect(a + bShare).toBeLessThan(0.76);
    expect(a).toBeGreaterThanOrEqual(0.1875);
    expect(a).toBeLessThan(0.21);
    expect(coarse.roles.a!.meanAbsDeviationFromFair).toBeLessThan(0.02);
    expect(coarse.roles.b!.maxDominantShare).toBeGreaterThanOrEqual(0.75);
  });

  it("keeps wait percentiles per interval and a monotone CDF, offers and launches cumulative per sample", async () => {
    const r = await runScenario(busy(2), { sampleIntervalSeconds: 20 });
    const cdf = r.waitSeconds.cdf;
    expect(cdf).toHaveLength(101);
    expect(cdf.at(-1)).toEqual([r.waitSeconds.max, 1]);
    for (let i = 1; i < cdf.length; i++) expect(cdf[i]![0]).toBeGreaterThanOrEqual(cdf[i - 1]![0]);
    const samples = r.utilization.samples;
    expect(samples.map((s) => s.t)).toEqual(Array.from({ length: 12 }, (_, i) => (i + 1) * 20));
    expect(samples.reduce((n, s) => n + s.waits.count, 0)).toBe(r.waitSeconds.count);
    for (const s of samples) if (s.waits.count > 0) expect(s.waits.p99).toBeGreaterThanOrEqual(s.waits.p50);
    for (let i = 1; i < samples.length; i++) {
      expect(samples[i]!.offers.made).toBeGreaterThanOrEqual(samples[i - 1]!.offers.made);
      expect(samples[i]!.launched).toBeGreaterThanOrEqual(samples[i - 1]!.launched);
    }
    expect(samples.at(-1)!.offers.made).toBeLessThanOrEqual(r.offers.made);
    expect(samples.at(-1)!.launched).toBe(r.tasks.launched);
    expect(r.utilization.max.cpus).toBeGreaterThanOrEqual(r.utilization.mean.cpus!);
    expect(samples[0]!.capacity).toEqual({ cpus: 12, mem: 24576, disk: 30720 });
  });
});

/** Pulls the embedded JSON out of a page. */
function embeddedData(page: string): { result: SimResult; series: Record<string, unknown> } {
  const m = /<script type="application\/json" id="corral-data">([\s\S]*?)<\/script>/.exec(page);
  if (!m) throw new Error("no embedded data");
  return JSON.parse(m[1]!);
}

describe("the HTML report", () => {
  it("lists master failovers with their election and recovery times, and leaves the section out without any", async () => {
    const base = busy(5);
    const r = await runScenario({ ...base, cluster: { ...base.cluster, masters: 2 }, events: [{ atSeconds: 60, type: "master-failover" }] });
    expect(r.masters.failovers).toHaveLength(1);
    const failover = r.masters.failovers[0]!;
    expect(failover.recoverySeconds).not.toBeNull();
    const page = renderHtmlReport(r, loadUplotAssets());
    expect(page).toContain("<h2>Master failovers</h2>");
    expect(page).toContain(`<td>${failover.crashed}</td><td>${failover.leader}</td>`);
    expect(renderHtmlReport(await runScenario(busy(5)), loadUplotAssets())).not.toContain("Master failovers");
  });

  it("is one page with uPlot and the data inlined, no external URL, and a script that draws every chart", async () => {
    const assets = loadUplotAssets();
    const r = await runScenario({ ...busy(3), name: 'tricky </script><img src="http://example.com/x.png"> name' });
    const page = renderHtmlReport(r, assets);
    expect(renderHtmlReport(r, assets)).toBe(page);

    expect(page.startsWith("<!DOCTYPE html>")).toBe(true);
    expect(page).toContain(assets.js);
    expect(page).toContain(assets.css);
    expect(page).toContain("MIT");
    expect(page).toContain("Copyright (c) 2022 Leon Sorokin");
    // Nothing is fetched: no src or href pointing anywhere (the scenario name tried to add one).
    expect(page).not.toMatch(/\b(src|href)\s*=\s*["']?\s*(https?:)?\/\//i);
    expect(page).not.toMatch(/<link\b/i);
    expect(page).not.toMatch(/@import/);
    // The data comes back out whole; the hostile name stays text.
    const data = embeddedData(page);
    expect(data.result).toEqual(r);
    expect(page).toContain("tricky &lt;/script&gt;&lt;img");
    expect(page.match(/<\/script>/g)).toHaveLength(3);

    // Run the page's own script against a stand-in uPlot: every chart gets aligned data.
    const scripts = [...page.matchAll(/<script>\n([\s\S]*?)\n<\/script>/g)].map((m) => m[1]!);
    expect(scripts).toHaveLength(2);
    const charts: Array<{ id: string; title: string; data: unknown[][]; labels: string[] }> = [];
    const elements = new Map<string, { id: string; clientWidth: number; innerHTML: string }>();
    const json = /<script type="application\/json" id="corral-data">([\s\S]*?)<\/script>/.exec(page)![1]!;
    vm.runInNewContext(scripts[1]!, {
      document: {
        getElementById: (id: string) => {
          if (id === "corral-data") return { textContent: json };
          if (!page.includes(`id="${id}"`)) return null;
          if (!elements.has(id)) elements.set(id, { id, clientWidth: 900, innerHTML: "" });
          return elements.get(id);
        },
      },
      window: { addEventListener: () => undefined },
      setTimeout,
      clearTimeout,
      uPlot: function (opts: { title: string; series: Array<{ label: string }> }, d: unknown[][], el: { id: string }) {
        charts.push({ id: el.id, title: opts.title, data: d, labels: opts.series.map((s) => s.label) });
      },
    });
    expect(charts.map((c) => c.id)).toEqual(["c-util", "c-shares", "c-pending", "c-waits", "c-cdf", "c-offers", "c-launches", "c-stranded"]);
    for (const c of charts) {
      expect(c.data.length).toBe(c.labels.length);
      for (const column of c.data) expect(column.length).toBe(c.data[0]!.length);
    }
    const byId = Object.fromEntries(charts.map((c) => [c.id, c]));
    expect(byId["c-util"]!.data[0]).toHaveLength(r.utilization.samples.length);
    expect(byId["c-util"]!.labels).toEqual(["simulated seconds", "cpus %", "mem %", "disk %"]);
    expect(byId["c-shares"]!.labels).toEqual(["simulated seconds", "a", "a fair", "b", "b fair"]);
    expect(byId["c-cdf"]!.data[1]).toEqual(r.waitSeconds.cdf.map(([, f]) => f));
    expect(byId["c-offers"]!.labels).toEqual(["simulated seconds", "made", "declined", "rescinded"]);
    expect(byId["c-stranded"]!.labels).toEqual(["simulated seconds", "stranded cpus", "stranded mem (MB)"]);
    // Failures are tabled and marked.
    expect(r.failures.length).toBeGreaterThan(0);
    expect((data.series.markers as unknown[]).length).toBeGreaterThanOrEqual(r.failures.length);
    expect(page).toContain("<h2>Failures and recovery</h2>");
    expect(page).toContain(`<td>${r.failures[0]!.atSeconds}</td>`);
  });
});
