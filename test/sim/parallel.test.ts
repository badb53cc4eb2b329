import { describe, expect, it } from "vitest";
import { runCheck } from "../../sim/check.ts";
import { runInOrder, SimPool, type SimJob } from "../../sim/parallel.ts";
import { validatePlanSpec } from "../../sim/plan.ts";
import { validateScenario } from "../../sim/scenario.ts";

/** A small check world: each seed runs in a few seconds. */
const CHECK = { agents: 3, seconds: 60 } as const;

describe("simulations on worker threads", () => {
  it("a check seed run on a worker reports exactly what it reports in this thread", async () => {
    const seeds = [3, 4, 5];
    const order: number[] = [];
    const pooled = await runInOrder(
      seeds.map((seed) => ({ kind: "check" as const, seed, options: CHECK })),
      2,
      (_outcome, index) => order.push(index),
    );
    const inline = [];
    for (const seed of seeds) inline.push(await runCheck(seed, CHECK));
    expect(pooled).toEqual(inline);
    expect(pooled.map((o) => o.seed)).toEqual(seeds);
    // Results are handed over in the jobs' order, whichever worker finished first.
    expect(order).toEqual([0, 1, 2]);
    expect(pooled.every((o) => o.ok)).toBe(true);
  }, 120_000); // six small simulations and two workers' start (each loads the simulator's modules)

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
