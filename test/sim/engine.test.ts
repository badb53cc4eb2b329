import { describe, expect, it } from "vitest";
import { SimEngine } from "../../sim/engine.ts";

describe("SimEngine", () => {
  it("fires events in (time, scheduling order) and moves the clock to each event", async () => {
    const engine = new SimEngine({ startMs: 1000 });
    const seen: string[] = [];
    engine.at(1030, () => seen.push(`c@${engine.now()}`));
    engine.at(1010, () => seen.push(`a@${engine.now()}`));
    engine.at(1010, () => seen.push(`b@${engine.now()}`));
    engine.after(0, () => seen.push(`z@${engine.now()}`));
    const stats = await engine.run();
    expect(seen).toEqual(["z@1000", "a@1010", "b@1010", "c@1030"]);
    expect(stats.events).toBe(4);
    expect(stats.endMs).toBe(1030);
  });

  it("honours cancel, negative delays and untilMs", async () => {
    const engine = new SimEngine({ startMs: 0 });
    const seen: number[] = [];
    const handle = engine.timers.set(5, () => seen.push(5));
    engine.timers.set(-3, () => seen.push(0));
    engine.timers.set(50, () => seen.push(50));
    handle.cancel();
    handle.cancel();
    await engine.run({ untilMs: 20 });
    expect(seen).toEqual([0]);
    expect(engine.now()).toBe(20);
    await engine.run({ untilMs: 100 });
    expect(seen).toEqual([0, 50]);
    expect(engine.now()).toBe(100);
  });

  it("lets promise chains started by an event settle before the next event, at the event's time", async () => {
    const engine = new SimEngine({ startMs: 0 });
    const log: string[] = [];
    const deep = async (depth: number): Promise<void> => {
      if (depth > 0) {
        await Promise.resolve();
        return deep(depth - 1);
      }
      log.push(`chain done at ${engine.now()}`);
    };
    engine.at(10, () => void deep(200));
    engine.at(10, () => log.push(`next event at ${engine.now()}`));
    engine.at(11, () => log.push(`later event at ${engine.now()}`));
    await engine.run();
    expect(log).toEqual(["chain done at 10", "next event at 10", "later event at 11"]);
  });

  it("async timer chains are deterministic: the same program gives the same trace", async () => {
    const trace = async (): Promise<string> => {
      const engine = new SimEngine({ startMs: 0 });
      const out: string[] = [];
      const sleep = (ms: number) => new Promise<void>((resolve) => engine.timers.set(ms, resolve));
      const worker = async (name: string, step: number) => {
        for (let i = 0; i < 20; i++) {
          await sleep(step);
          await Promise.resolve();
          out.push(`${name}${i}@${engine.now()}`);
        }
      };
      void worker("a", 3);
      void worker("b", 2);
      void worker("c", 6);
      await engine.run();
      return out.join(",");
    };
    const first = await trace();
    expect(first.split(",")).toHaveLength(60);
    expect(await trace()).toBe(first);
  });

  it("fires known-synchronous events (settle: false) back to back, in time order, all of them", async () => {
    // How fast is the benchmark's business (`npm run bench -- sim`, "engine raw"); this is what they do.
    const engine = new SimEngine({ startMs: 0 });
    let n = 0;
    let lastMs = -1;
    let outOfOrder = 0;
    const tick = () => {
      if (engine.now() < lastMs) outOfOrder++;
      lastMs = engine.now();
      if (++n < 200_000) engine.after(1 + (n % 5), tick, { settle: false });
    };
    for (let i = 0; i < 100; i++) engine.after(i, tick, { settle: false });
    const stats = await engine.run();
    expect(stats.events).toBe(200_099);
    expect(engine.eventsProcessed()).toBe(200_099);
    expect(outOfOrder).toBe(0);
    expect(stats.endMs).toBe(lastMs);
    expect(engine.pending()).toBe(0);
  });

  it("refuses a nested run and stops at maxEvents", async () => {
    const engine = new SimEngine();
    for (let i = 0; i < 10; i++) engine.after(i, () => {});
    const running = engine.run({ maxEvents: 3 });
    await expect(engine.run()).rejects.toThrow(/already running/);
    expect((await running).events).toBe(3);
    expect(engine.pending()).toBe(7);
  });
});
