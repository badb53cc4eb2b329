import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TimedHeap } from "../../sdk/time-heap.ts";

describe("TimedHeap", () => {
  it("pops in (time, sequence) order whatever the insertion order, interleaved pushes and pops included", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 20 }), fc.boolean()), { maxLength: 200 }), (ops) => {
        const heap = new TimedHeap<{ timeMs: number; seq: number }>();
        const model: { timeMs: number; seq: number }[] = [];
        let seq = 0;
        for (const [timeMs, popNow] of ops) {
          const entry = { timeMs, seq: seq++ };
          heap.push(entry);
          model.push(entry);
          model.sort((a, b) => a.timeMs - b.timeMs || a.seq - b.seq);
          if (popNow) expect(heap.pop()).toBe(model.shift());
          expect(heap.size).toBe(model.length);
          expect(heap.peek()).toBe(model[0]);
        }
        while (model.length > 0) expect(heap.pop()).toBe(model.shift());
        expect(heap.pop()).toBeUndefined();
      }),
    );
  });
});
