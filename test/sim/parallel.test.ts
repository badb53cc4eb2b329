import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { simCommand } from "../../sim/cli.ts";
import { SimPool, type SimJob } from "../../sim/parallel.ts";
import { planScenario, validatePlanSpec } from "../../sim/plan.ts";
import { validateScenario } from "../../sim/scenario.ts";

/** A small check world: each seed runs in a few seconds. */
const CHECK = { agents: 3, seconds: 60 } as const;

describe("simulations on worker threads", () => {
  it("corral sim check --jobs 2 reports every seed exactly as one at a time here does, in seed order", async () => {
    const run = async (jobs: string) => {
      const out: string[] = [];
      const log = vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
      try {
        const code = await simCommand(["check", "--seeds", "3..5", "--agents", String(CHECK.agents), "--seconds", String(CHECK.seconds), "--jobs", jobs]);
        return { code, out };
      } finally {
        log.mockRestore();
      }
    };
    const pooled = await run("2");
    const inline = await run("1");
    expect(pooled).toEqual(inline);
    expect(pooled.code).toBe(0);
    expect(pooled.out.map((line) => line.split(":")[0])).toEqual(["seed 3", "seed 4", "seed 5", "all 3 seeds passed"]);
    // Each line carries the run's own counts (events, launches, faults, the time the Marathon check
    // judged), so equal lines mean equal runs.
    expect(pooled.out[0]).toMatch(/^seed 3: ok \(\d+ events, \d+ launched, \d+ faults, Marathon apps judged for \d+ s\)$/);
  }, 120_000); // six small simulations and two workers' start (each loads the simulator's modules)

  it("bin/corral sim check --jobs 2 runs its seeds on workers under the flags corral sim starts node with", async () => {
    // `corral sim` runs node with V8 flags (a larger young generation) that a worker refuses.
    const run = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const child = execFile(join(process.cwd(), "bin/corral"), ["sim", "check", "--seeds", "3..4", "--agents", "2", "--seconds", "60", "--jobs", "2"], { timeout: 120_000 }, (err, stdout, stderr) => {
        if (err && typeof err.code !== "number") reject(err);
        else resolve({ code: child.exitCode, out: stdout + stderr });
      });
    });
    expect(run.out).toMatch(/^seed 3: ok .*\nseed 4: ok .*\nall 2 seeds passed\n$/);
    expect(run.code).toBe(0);
  }, 150_000);

  it("--jobs must be an integer 1..64", async () => {
    const err = vi.spyOn(console, "error").mockImplementation(() => undefined);
    try {
      expect(await simCommand(["check", "--seeds", "1", "--jobs", "0"])).toBe(2);
      expect(await simCommand(["check", "--seeds", "1", "--jobs", "1.5"])).toBe(2);
      expect(err.mock.calls.map((c) => String(c[0]))).toEqual([
        'corral sim check: --jobs: must be an integer >= 1 and <= 64, got "0"',
        'corral sim check: --jobs: must be an integer >= 1 and <= 64, got "1.5"',
      ]);
    } finally {
      err.mockRestore();
    }
  });

  it("a plan on worker threads is the very plan one thread finds: same points, same runs, same margins", async () => {
    // Tasks with exponential durations and Poisson arrivals, so each seed's world differs; a loss of
    // one agent as a variant, so a point has runs of two kinds.
    const scenario = {
      name: "pooled",
      seed: 7,
      endSeconds: 300,
      cluster: { agentClasses: { std: { count: 2, resources: "cpus:4;mem:8192" } } },
      frameworks: [
        {
          name: "f",
          kind: "tasks",
          refuseSeconds: 1,
          tasks: { count: 30, cpus: 1, mem: 512, durationSeconds: { dist: "exp", meanSeconds: 30 }, arrival: { poisson: { ratePerSecond: 0.2 } } },
        },
      ],
    };
    const targets = { targets: { maxWaitP90Seconds: 5, survive: { agents: 1, atSeconds: 60 } }, search: { classes: { std: { min: 1, max: 6 } } } };
    const pooled = await planScenario(scenario, targets, { seeds: 3, jobs: 2 });
    const inline = await planScenario(scenario, targets, { seeds: 3, jobs: 1 });
    expect(pooled).toEqual(inline);
    expect(pooled.runs).toBe(pooled.evaluated.length * 3 * 2);
    expect(pooled.recommendation).not.toBeNull();
  }, 180_000); // a dozen small simulations twice, and two workers' start

  it("a run that throws fails its own job only; the worker goes on with the next", async () => {
    const scenario = validateScenario({
      seed: 1,
      endSeconds: 30,
      cluster: { agentClasses: { std: { count: 1, resources: "cpus:2;mem:2048" } } },
      frameworks: [{ name: "f", kind: "tasks", tasks: { count: 2, cpus: 1, mem: 256, durationSeconds: 5, arrival: { at: 1 } } }],
    });
    const spec = validatePlanSpec({ targets: { maxWaitP99Seconds: 60 } }, scenario);
    const plan = (classes: Record<string, number>): Extract<SimJob, { kind: "plan" }> => ({ kind: "plan", scenario, spec, run: { counts: classes, seed: 1, variant: { id: "base" } } });
    const pool = new SimPool(1);
    try {
      const broken = pool.run(plan({ nosuch: 2 }));
      const fine = pool.run(plan({ std: 2 }));
      await expect(broken).rejects.toThrow(/nosuch|undefined/);
      const metrics = await fine;
      expect(metrics.unplacedTasks).toBe(0);
      expect(metrics.waitP99Seconds).toBeLessThan(60);
    } finally {
      await pool.close();
    }
  });

  it("closing the pool fails the jobs still waiting, and a closed pool takes none", async () => {
    const pool = new SimPool(1);
    const running = expect(pool.run({ kind: "check", seed: 1, options: CHECK })).rejects.toThrow("SimPool: closed");
    const waiting = expect(pool.run({ kind: "check", seed: 2, options: CHECK })).rejects.toThrow("SimPool: closed");
    await pool.close();
    await waiting;
    await running;
    await expect(pool.run({ kind: "check", seed: 3, options: CHECK })).rejects.toThrow("SimPool: closed");
    expect(() => new SimPool(0)).toThrow(/size must be an integer 1\.\.64/);
  });
});
