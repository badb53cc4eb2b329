import { describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/clock.ts";
import { SeededRng, shuffleInPlace } from "../../sdk/rng.ts";

describe("SeededRng", () => {
  it("gives the same stream for the same seed and different streams for different seeds", () => {
    const draw = (seed: number | string) => {
      const rng = new SeededRng(seed);
      return Array.from({ length: 8 }, () => rng.nextUint32());
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw("x")).toEqual(draw("x"));
    expect(draw(42)).not.toEqual(draw(43));
  });

  it("stays in range and is roughly uniform", () => {
    const rng = new SeededRng(7);
    const buckets = new Array(10).fill(0);
    let outOfRange = 0;
    for (let i = 0; i < 100_000; i++) {
      const v = rng.next();
      if (!(v >= 0 && v < 1)) outOfRange++;
      else buckets[Math.floor(v * 10)]++;
    }
    expect(outOfRange).toBe(0);
    for (const count of buckets) expect(Math.abs(count - 10_000)).toBeLessThan(600);
    expect(() => rng.int(0)).toThrow(RangeError);
  });

  it("makes version-4 uuids and independent forks", () => {
    const rng = new SeededRng(1);
    expect(rng.uuid()).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const a = new SeededRng(1).fork("a");
    const b = new SeededRng(1).fork("b");
    expect(a.next()).not.toBe(b.next());
    expect(shuffleInPlace([1, 2, 3, 4, 5], new SeededRng(3)).sort()).toEqual([1, 2, 3, 4, 5]);
  });
});

describe("ManualClock", () => {
  it("only moves forward when told", () => {
    const clock = new ManualClock(100);
    clock.advance(50);
    expect(clock.now()).toBe(150);
    expect(() => clock.advance(-1)).toThrow(RangeError);
    expect(() => clock.set(10)).toThrow(RangeError);
  });
});
