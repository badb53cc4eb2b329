import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { simCommand } from "../../sim/cli.ts";
import {
  failureEvents,
  formatPlan,
  percentileOf,
  planScenario,
  PlanSpecError,
  searchPlan,
  validatePlanSpec,
  type Evaluate,
  type PlanPoint,
  type RunMetrics,
} from "../../sim/plan.ts";
import { MAX_SEED, validateScenario, type Scenario } from "../../sim/scenario.ts";

const dir = mkdtempSync(join(tmpdir(), "corral-sim-plan-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A monotone fake world: the wait shrinks with capacity; a seed in `slowSeeds` sees twice the wait. */
function fakeWorld(opts: { cpusPerAgent?: Record<string, number>; demand?: number; slowSeeds?: number[] } = {}) {
  const calls: PlanPoint[] = [];
  const perAgent = opts.cpusPerAgent ?? { std: 4 };
  const demand = opts.demand ?? 40;
  const evaluate: Evaluate = async (point) => {
    calls.push(point);
    let cpus = 0;
    for (const [cls, n] of Object.entries(point.counts)) cpus += n * (perAgent[cls] ?? 0);
    if (point.variant.id === "lose-agents") cpus -= point.variant.agents * Math.max(...Object.values(perAgent));
    const slow = opts.slowSeeds?.includes(point.seed) ? 2 : 1;
    const wait = cpus <= 0 ? Infinity : (demand / cpus) * 10 * slow;
    const metrics: RunMetrics = {
      waitP50Seconds: wait / 4,
      waitP90Seconds: wait / 2,
      waitP99Seconds: wait,
      unplacedTasks: cpus >= demand / 4 ? 0 : Math.ceil(demand / 4 - cpus),
      unplacedMarathonInstances: 0,
      cpuUtilizationPercent: cpus <= 0 ? 100 : Math.min(100, (demand / cpus) * 50),
    };
    return metrics;
  };
  return { evaluate, calls };
}

const seeds5 = [1, 2, 3, 4, 5];

describe("searchPlan (a synthetic monotone evaluator)", () => {
  it("finds the smallest passing count of one class by doubling then bisection, over every seed", async () => {
    const world = fakeWorld();
    // wait p99 = 400 / (4 n): <= 10 s from n = 10 on.
    const plan = await searchPlan({ classes: [{ name: "std", min: 1, start: 2, cpus: 4, mem: 8192 }], targets: { maxWaitP99Seconds: 10 }, seeds: seeds5, evaluate: world.evaluate });
    expect(plan.method).toBe("bisection");
    expect(plan.recommendation?.counts).toEqual({ std: 10 });
    expect(plan.recommendation).toMatchObject({ agents: 10, cpus: 40, mem: 81_920, pass: true });
    // 2, 4, 8, 16 fail or pass, then bisection between 9 and 16.
    const order = plan.evaluated.map((p) => p.counts.std);
    expect(order.slice(0, 4)).toEqual([2, 4, 8, 16]);
    expect(new Set(order).size).toBe(order.length);
    expect(plan.evaluated.find((p) => p.counts.std === 9)?.pass).toBe(false);
    // Every point ran with every seed, once.
    expect(plan.runs).toBe(order.length * 5);
    expect(world.calls).toHaveLength(plan.runs);
    for (const n of order) expect(world.calls.filter((c) => c.counts.std === n).map((c) => c.seed)).toEqual(seeds5);
  });

  it("judges each metric by its percentile over seeds: one slow seed in five moves the 90th percentile, not the median", async () => {
    const slow = fakeWorld({ slowSeeds: [3] });
    const p90 = await searchPlan({ classes: [{ name: "std", min: 1, start: 1 }], targets: { maxWaitP99Seconds: 10 }, seeds: seeds5, evaluate: slow.evaluate });
    expect(p90.recommendation?.counts.std).toBe(20);
    const p50 = await searchPlan({ classes: [{ name: "std", min: 1, start: 1 }], targets: { maxWaitP99Seconds: 10 }, seeds: seeds5, percentile: 50, evaluate: fakeWorld({ slowSeeds: [3] }).evaluate });
    expect(p50.recommendation?.counts.std).toBe(10);
    expect(percentileOf([5, 1, 4, 2, 3], 90)).toBe(5);
    expect(percentileOf([5, 1, 4, 2, 3], 50)).toBe(3);
    expect(percentileOf([1, Infinity], 90)).toBe(Infinity);
  });

  it("takes the nearest rank ceil(p / 100 * n) exactly, without floating-point error moving it up one", () => {
    // 28% of 25 is 7: the 7th smallest (0.28 * 25 is 7.000000000000001 in floating point).
    const values = Array.from({ length: 25 }, (_, i) => i + 1);
    expect(percentileOf(values, 28)).toBe(7);
    expect(percentileOf(Array.from({ length: 50 }, (_, i) => i + 1), 14)).toBe(7);
    expect(percentileOf(values, 90)).toBe(23);
    expect(percentileOf(values, 100)).toBe(25);
    expect(percentileOf(values, 0.1)).toBe(1);
  });

  it("reports the margin on every target, in every variant, and checks survival in its own runs", async () => {
    const world = fakeWorld();
    const plan = await searchPlan({
      classes: [{ name: "std", min: 1, start: 4 }],
      targets: { maxWaitP99Seconds: 10, allPlaced: true, maxCpuUtilizationPercent: 60, survive: { agents: 2 } },
      seeds: [7, 8],
      failAtSeconds: 100,
      evaluate: world.evaluate,
    });
    // Losing 2 of n agents: 400 / (4 (n - 2)) <= 10 needs n = 12.
    const rec = plan.recommendation!;
    expect(rec.counts).toEqual({ std: 12 });
    expect(rec.checks).toEqual([
      { variant: "base", target: "wait p99 (s)", limit: 10, observed: 400 / 48, margin: 10 - 400 / 48, pass: true },
      { variant: "base", target: "unplaced tasks", limit: 0, observed: 0, margin: 0, pass: true },
      { variant: "base", target: "cpu utilization (%)", limit: 60, observed: (40 / 48) * 50, margin: 60 - (40 / 48) * 50, pass: true },
      { variant: "lose 2 agents", target: "wait p99 (s)", limit: 10, observed: 10, margin: 0, pass: true },
      { variant: "lose 2 agents", target: "unplaced tasks", limit: 0, observed: 0, margin: 0, pass: true },
    ]);
    expect(world.calls.filter((c) => c.variant.id === "lose-agents").every((c) => c.variant.id === "lose-agents" && c.variant.atSeconds === 100)).toBe(true);
    expect(plan.runs).toBe(plan.evaluated.length * 2 * 2);
    const text = formatPlan({ ...plan, scenario: "fake", targets: {}, searched: [{ class: "std", min: 1, max: null, cpus: 4, mem: 0 }], fixed: {} });
    expect(text).toContain("recommendation: std=12");
    expect(text).toMatch(/wait p99 \(s\)\s+lose 2 agents\s+10\s+10\s+0\s+yes/);
  });

  it("prints a target missed by less than the table's rounding with a negative margin and an observed value that differs from the limit", () => {
    const checks = [
      { variant: "base", target: "wait p99 (s)", limit: 60, observed: 60.0042, margin: 60 - 60.0042, pass: false },
      { variant: "base", target: "cpu utilization (%)", limit: 75, observed: 74.996, margin: 75 - 74.996, pass: true },
      { variant: "base", target: "wait p50 (s)", limit: 10, observed: 4.5, margin: 5.5, pass: true },
    ];
    const text = formatPlan({
      method: "bisection",
      seeds: [1],
      percentile: 90,
      recommendation: { counts: { std: 3 }, pass: false, checks, agents: 3, cpus: 12, mem: 0 },
      evaluated: [],
      runs: 0,
      truncated: false,
      scenario: "rounding",
      targets: {},
      searched: [{ class: "std", min: 1, max: null, cpus: 4, mem: 0 }],
      fixed: {},
    });
    // Rounded to two decimals the first row read "60  60  0  NO", the second "75  75  0  yes".
    expect(text).toMatch(/wait p99 \(s\)\s+base\s+60\s+60\.004\s+-0\.004\s+NO/);
    expect(text).toMatch(/cpu utilization \(%\)\s+base\s+75\s+74\.996\s+0\.004\s+yes/);
    expect(text).toMatch(/wait p50 \(s\)\s+base\s+10\s+4\.5\s+5\.5\s+yes/);
  });

  it("with several classes, a coordinate search ends on a point where no class can lose one agent", async () => {
    const sizes = { big: 16, small: 4 };
    const world = fakeWorld({ cpusPerAgent: sizes, demand: 100 });
    // wait = 1000 / cpus <= 10 -> at least 100 cpus.
    const plan = await searchPlan({
      classes: [
        { name: "big", min: 0, start: 2, cpus: 16 },
        { name: "small", min: 0, start: 2, cpus: 4 },
      ],
      targets: { maxWaitP99Seconds: 10 },
      seeds: [1],
      evaluate: world.evaluate,
    });
    expect(plan.method).toBe("coordinate-bisection");
    const rec = plan.recommendation!;
    expect(rec.pass).toBe(true);
    const cpus = rec.counts.big! * 16 + rec.counts.small! * 4;
    expect(cpus).toBeGreaterThanOrEqual(100);
    for (const cls of ["big", "small"] as const) {
      if (rec.counts[cls] === 0) continue;
      expect(cpus - sizes[cls]).toBeLessThan(100);
    }
    expect(rec.cpus).toBe(cpus);
  });

  it("with several classes, never runs a point whose outcome the points already run decide (more agents never hurt)", async () => {
    // Every point is seeds x variants simulator runs. A point with no more agents of any class than
    // a failing one must fail, one with no fewer than a passing one must pass: the second round of
    // the coordinate search bisected such points all over again.
    const sizes = { big: 16, mid: 8, small: 4 };
    for (const names of [["big", "small"], ["big", "mid", "small"]] as const) {
      const plan = await searchPlan({
        classes: names.map((name) => ({ name, min: 0, start: 2, cpus: sizes[name] })),
        targets: { maxWaitP99Seconds: 10 },
        seeds: [1],
        evaluate: fakeWorld({ cpusPerAgent: sizes, demand: 100 }).evaluate,
      });
      const rec = plan.recommendation!;
      const cpus = names.reduce((sum, n) => sum + rec.counts[n]! * sizes[n], 0);
      expect(cpus).toBeGreaterThanOrEqual(100);
      for (const n of names) if (rec.counts[n]! > 0) expect(cpus - sizes[n]).toBeLessThan(100);
      const below = (a: Record<string, number>, b: Record<string, number>) => names.every((n) => a[n]! <= b[n]!);
      plan.evaluated.forEach((point, i) => {
        for (const earlier of plan.evaluated.slice(0, i)) {
          if (!earlier.pass) expect(below(point.counts, earlier.counts), `${JSON.stringify(point.counts)} below failing ${JSON.stringify(earlier.counts)}`).toBe(false);
          else expect(below(earlier.counts, point.counts), `${JSON.stringify(point.counts)} above passing ${JSON.stringify(earlier.counts)}`).toBe(false);
        }
      });
    }
  });

  it("says so when nothing within the bounds passes, and stops at maxPoints", async () => {
    const none = await searchPlan({ classes: [{ name: "std", min: 1, start: 1 }], targets: { maxWaitP99Seconds: 10 }, seeds: [1], maxAgentsPerClass: 6, evaluate: fakeWorld().evaluate });
    expect(none.recommendation).toBeNull();
    expect(none.reason).toBe("no point up to std=6 meets every target");
    expect(none.evaluated.map((p) => p.counts.std)).toEqual([1, 2, 4, 6]);
    const capped = await searchPlan({ classes: [{ name: "std", min: 1, start: 1 }], targets: { maxWaitP99Seconds: 10 }, seeds: [1], maxPoints: 2, evaluate: fakeWorld().evaluate });
    expect(capped.truncated).toBe(true);
    expect(capped.evaluated).toHaveLength(2);
    expect(capped.recommendation).toBeNull();
  });
});

const tiny: Scenario = {
  name: "tiny",
  seed: 1,
  endSeconds: 100,
  cluster: {
    agentClasses: {
      small: { count: 1, resources: "cpus:2;mem:4096", attributes: "rack:r1" },
      big: { count: 1, resources: "cpus:8;mem:16384", attributes: "rack:r2" },
    },
  },
  frameworks: [{ name: "batch", kind: "tasks", refuseSeconds: 1, tasks: { count: 10, cpus: 1, mem: 512, durationSeconds: 100, arrival: { at: 1 } } }],
};

describe("targets and failures", () => {
  it("rejects a bad targets file naming each field and rule, before anything runs", () => {
    const scenario = validateScenario(tiny);
    let error: unknown;
    try {
      validatePlanSpec(
        {
          targets: { maxWaitP99Seconds: -1, placementGraceSeconds: -5, maxCpuUtilizationPercent: 120, allPlaced: "yes", survive: { agents: 0, racks: 3, atSeconds: 100 }, p42: 1 },
          search: { classes: { gpu: {}, small: { min: 5, max: 2 } } },
          seeds: 0,
          percentile: 0,
        },
        scenario,
      );
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(PlanSpecError);
    expect((error as PlanSpecError).problems).toEqual(
      expect.arrayContaining([
        "plan.seeds: must be >= 1",
        "plan.percentile: must be > 0",
        "plan.targets.p42: is not a known field (known: maxWaitP50Seconds, maxWaitP90Seconds, maxWaitP99Seconds, allPlaced, allMarathonAppsPlaced, maxCpuUtilizationPercent, survive, placementGraceSeconds)",
        "plan.targets.placementGraceSeconds: must be >= 0",
        "plan.targets.maxWaitP99Seconds: must be >= 0",
        "plan.targets.maxCpuUtilizationPercent: must be <= 100",
        "plan.targets.allPlaced: must be true or false",
        "plan.targets.survive.agents: must be >= 1",
        "plan.targets.survive.atSeconds: must be < scenario.endSeconds (100)",
        "plan.targets.survive.racks: is only used with rack: true",
        "plan.search.classes.gpu: must name an agent class of scenario.cluster.agentClasses (small, big)",
        "plan.search.classes.small.max: must be >= min",
      ]),
    );
    expect(() => validatePlanSpec({ targets: {} }, scenario)).toThrow(/plan.targets: must set at least one of/);
    expect(() => validatePlanSpec({ targets: { maxWaitP99Seconds: 5, placementGraceSeconds: 10 } }, scenario)).toThrow("plan.targets.placementGraceSeconds: is only used with allPlaced: true");
    expect(() => validatePlanSpec({ targets: { maxCpuUtilizationPercent: 50, survive: { agents: 1 } } }, scenario)).toThrow(/plan.targets.survive: needs a wait or placement target/);
    const norack = validateScenario({ ...tiny, cluster: { agentClasses: { small: { count: 1, resources: "cpus:2;mem:4096" } } } });
    expect(() => validatePlanSpec({ targets: { allPlaced: true, survive: { rack: true } } }, norack)).toThrow(/plan.targets.survive.rack: no agent class has a rack attribute/);
  });

  it("refuses a wait target on a scenario with no framework whose tasks have a wait, instead of passing it on nothing", () => {
    // Marathon instances have no submission time, so they are not in the waits: on this scenario a
    // wait target measured 0 s at any cluster size, one agent too small for the app included.
    const marathonOnly = validateScenario({
      name: "apps",
      seed: 1,
      endSeconds: 100,
      cluster: { agentClasses: { std: { count: 1, resources: "cpus:2;mem:4096" } } },
      frameworks: [{ name: "m", kind: "marathon", marathon: { apps: [{ id: "/web", cmd: "serve", cpus: 1, mem: 128, instances: 4 }] } }],
    });
    let error: unknown;
    try {
      validatePlanSpec({ targets: { maxWaitP99Seconds: 60, maxWaitP50Seconds: 10, allPlaced: true } }, marathonOnly);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(PlanSpecError);
    const rule =
      "the scenario has no framework whose tasks have a wait (kind tasks, greedy or batch); Marathon instances have no submission time: judge them with allMarathonAppsPlaced or allPlaced";
    expect((error as PlanSpecError).problems).toEqual([`plan.targets.maxWaitP50Seconds: ${rule}`, `plan.targets.maxWaitP99Seconds: ${rule}`]);
    // allPlaced counts Marathon's waiting instances, so it stays allowed.
    expect(validatePlanSpec({ targets: { allPlaced: true } }, marathonOnly)).toEqual({ targets: { allPlaced: true } });
    expect(validatePlanSpec({ targets: { allMarathonAppsPlaced: true } }, marathonOnly)).toEqual({ targets: { allMarathonAppsPlaced: true } });
    // A decliner submits nothing either; a tasks framework beside it is enough.
    const decliner = validateScenario({ ...tiny, frameworks: [{ name: "d", kind: "decliner" }] });
    expect(() => validatePlanSpec({ targets: { maxWaitP90Seconds: 5 } }, decliner)).toThrow(`plan.targets.maxWaitP90Seconds: ${rule}`);
    expect(validatePlanSpec({ targets: { maxWaitP90Seconds: 5 } }, validateScenario(tiny))).toEqual({ targets: { maxWaitP90Seconds: 5 } });
  });

  it("refuses, before anything runs, seeds that would run past the largest scenario seed", async () => {
    // The scenario's seed is valid; seed + 1 and seed + 2 are not. The search used to run the first
    // seed and then fail with "scenario.seed: must be <= ...", blaming a scenario that obeys it.
    let runs = 0;
    const evaluate: Evaluate = async () => {
      runs++;
      return { waitP50Seconds: 0, waitP90Seconds: 0, waitP99Seconds: 0, unplacedTasks: 0, unplacedMarathonInstances: 0, cpuUtilizationPercent: 0 };
    };
    await expect(planScenario({ ...tiny, seed: MAX_SEED - 1 }, { targets: { allPlaced: true }, seeds: 3 }, { evaluate })).rejects.toThrow(
      `plan.seeds: a point runs scenario.seed (${MAX_SEED - 1}) to scenario.seed + 2, which must be <= ${MAX_SEED} (the largest scenario seed); lower the scenario's seed or the seeds`,
    );
    expect(runs).toBe(0);
    const plan = await planScenario({ ...tiny, seed: MAX_SEED - 2 }, { targets: { allPlaced: true }, seeds: 3 }, { evaluate });
    expect(plan.seeds).toEqual([MAX_SEED - 2, MAX_SEED - 1, MAX_SEED]);
  });

  it("refuses a loss the master could not notice before the end, instead of passing the survival target on a loss nobody saw", () => {
    // The master gives up on a silent agent after agentPingIntervalMs x maxMissedPings (15 s x 5 by
    // default); until then its tasks count as running. On this 100 s scenario the default loss at
    // 33 s was noticed at 108 s: survive passed with one agent too few.
    const s = validateScenario(tiny);
    const rule = (at: string, noticed: number) =>
      `plan.targets.survive.atSeconds: the master notices a lost agent only after 75 s without pings (cluster.agentPingIntervalMs x maxMissedPings): a loss at ${at} is noticed at ${noticed} s, not before the end (100 s); must be < 25`;
    expect(() => validatePlanSpec({ targets: { allPlaced: true, survive: { agents: 1 } } }, s)).toThrow(rule("33 s (the default, endSeconds / 3)", 108));
    expect(() => validatePlanSpec({ targets: { allPlaced: true, survive: { rack: true, atSeconds: 25 } } }, s)).toThrow(rule("25 s", 100));
    expect(validatePlanSpec({ targets: { allPlaced: true, survive: { agents: 1, atSeconds: 24 } } }, s).targets.survive).toEqual({ agents: 1, atSeconds: 24 });
    // Faster pings make the default time fine.
    const quick = validateScenario({ ...tiny, cluster: { ...tiny.cluster, agentPingIntervalMs: 2000, maxMissedPings: 3 } });
    expect(validatePlanSpec({ targets: { allPlaced: true, survive: { agents: 1 } } }, quick).targets.survive).toEqual({ agents: 1 });
  });

  it("turns survival variants into permanent agent failures: the largest agents, or the rack with the most cpus", () => {
    const s = validateScenario(tiny);
    expect(failureEvents(s, { small: 3, big: 1 }, { id: "lose-agents", agents: 2, atSeconds: 20 }, undefined)).toEqual([
      { atSeconds: 20, type: "fail-agents", class: "big", count: 1 },
      { atSeconds: 20, type: "fail-agents", class: "small", count: 1 },
    ]);
    // r1 holds 5 x 2 = 10 cpus, r2 1 x 8: r1 goes.
    expect(failureEvents(s, { small: 5, big: 1 }, { id: "lose-rack", atSeconds: 20 }, { rack: true })).toEqual([{ atSeconds: 20, type: "fail-agents", class: "small", count: 5 }]);
    expect(failureEvents(s, { small: 3, big: 1 }, { id: "lose-rack", atSeconds: 20 }, { rack: true })).toEqual([{ atSeconds: 20, type: "fail-agents", class: "big", count: 1 }]);
    // Spread over 4 racks: one rack holds ceil(n / 4) of each class.
    expect(failureEvents(s, { small: 5, big: 2 }, { id: "lose-rack", atSeconds: 20 }, { rack: true, racks: 4 })).toEqual([
      { atSeconds: 20, type: "fail-agents", class: "small", count: 2 },
      { atSeconds: 20, type: "fail-agents", class: "big", count: 1 },
    ]);
    expect(failureEvents(s, { small: 1, big: 1 }, { id: "base" }, undefined)).toEqual([]);
  });
});

describe("planning through the real simulator", () => {
  it("corral sim plan searches one class, keeps the others, and writes the JSON and the table", async () => {
    // Ten 1-cpu tasks arrive together; the big agent (8 cpus, not searched) and one small one (2) hold them all.
    const file = join(dir, "tiny.json");
    const targets = join(dir, "targets.json");
    writeFileSync(file, JSON.stringify(tiny));
    writeFileSync(targets, JSON.stringify({ targets: { maxWaitP99Seconds: 5, allPlaced: true }, search: { classes: { small: { min: 1, max: 2 } } } }));
    const out: string[] = [];
    const log = vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
    const err = vi.spyOn(console, "error").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
    const code = await simCommand(["plan", file, "--targets", targets, "--seeds", "2", "--json", join(dir, "plan.json"), "--table", join(dir, "plan.txt")]);
    const bad = await simCommand(["plan", file, "--targets", targets, "--seeds", "0"]);
    const badTargets = join(dir, "bad-targets.json");
    writeFileSync(badTargets, JSON.stringify({ targets: { maxWaitP99Seconds: "soon" } }));
    const invalid = await simCommand(["plan", file, "--targets", badTargets]);
    const missing = await simCommand(["plan", file]);
    log.mockRestore();
    err.mockRestore();
    expect(code).toBe(0);
    expect([bad, invalid, missing]).toEqual([2, 2, 2]);
    const plan = JSON.parse(readFileSync(join(dir, "plan.json"), "utf8"));
    expect(plan.seeds).toEqual([1, 2]);
    expect(plan.fixed).toEqual({ big: 1 });
    expect(plan.recommendation.counts).toEqual({ small: 1, big: 1 });
    expect(plan.recommendation.checks.every((c: { pass: boolean }) => c.pass)).toBe(true);
    expect(readFileSync(join(dir, "plan.txt"), "utf8")).toContain("recommendation: big=1 small=1");
    const text = out.join("\n");
    expect(text).toContain("--seeds: must be an integer >= 1 and <= 100");
    expect(text).toContain(`corral sim plan: ${badTargets}: invalid targets:\n  plan.targets.maxWaitP99Seconds: must be a finite number`);
    expect(text).toContain("--targets: is required");
  });

  it("judges the cpu ceiling by the mean use over the run: one busy 1-cpu task needs 4 one-cpu agents for 30%", async () => {
    // The task starts within milliseconds and runs past the end: n agents are 100/n % used.
    const one: Scenario = {
      name: "ceiling",
      seed: 1,
      endSeconds: 100,
      cluster: { agentClasses: { one: { count: 1, resources: "cpus:1;mem:1024" } } },
      frameworks: [{ name: "f", kind: "tasks", tasks: { count: 1, cpus: 1, mem: 64, durationSeconds: 1000, arrival: { at: 0 } } }],
    };
    const plan = await planScenario(one, { targets: { maxCpuUtilizationPercent: 30 }, seeds: 2 });
    expect(plan.recommendation?.counts).toEqual({ one: 4 });
    expect(plan.evaluated.map((p) => [p.counts.one, p.pass])).toEqual([[1, false], [2, false], [4, true], [3, false]]);
    const check = plan.recommendation!.checks[0]!;
    expect(check).toMatchObject({ variant: "base", target: "cpu utilization (%)", limit: 30, pass: true });
    expect(check.observed).toBeGreaterThan(24.9);
    expect(check.observed).toBeLessThanOrEqual(25);
    expect(check.margin).toBeCloseTo(30 - check.observed, 10);
  });

  it("finds the smallest count, and one more agent to survive losing one", async () => {
    // Ten 100 s tasks arrive together at 1 s on 2-cpu agents: the p99 wait (a task that never ran
    // counts as endless) stays under 5 s only when all ten start at once, n = 5.
    const only = { ...tiny, cluster: { agentClasses: { small: tiny.cluster.agentClasses.small! } } };
    const plain = await planScenario(only, { targets: { maxWaitP99Seconds: 5, allPlaced: true }, seeds: 2, search: { classes: { small: { min: 3, max: 6 } } } });
    expect(plain.recommendation?.counts).toEqual({ small: 5 });
    expect(plain.evaluated.map((p) => p.counts.small)).toEqual([6, 4, 5]);
    expect(plain.evaluated.find((p) => p.counts.small === 4)?.pass).toBe(false);
    const wait = plain.recommendation!.checks.find((c) => c.target === "wait p99 (s)")!;
    expect(wait.observed).toBeLessThan(5);
    expect(wait.margin).toBeCloseTo(5 - wait.observed, 10);
    // An agent lost for good at 5 s takes two tasks; once the master gives up on it (75 s without
    // pings) they are queued again, and run before the end (100 s) only on a spare agent.
    const survive = await planScenario(only, { targets: { allPlaced: true, maxWaitP99Seconds: 5, survive: { agents: 1, atSeconds: 5 } }, seeds: 1, search: { classes: { small: { min: 5, max: 6 } } } });
    expect(survive.recommendation?.counts).toEqual({ small: 6 });
    const five = survive.evaluated.find((p) => p.counts.small === 5)!;
    expect(five.checks.filter((c) => !c.pass)).toEqual([expect.objectContaining({ variant: "lose 1 agent", target: "unplaced tasks", observed: 2, margin: -2 })]);
    expect(survive.runs).toBe(4);
  });
});
