/**
 * A binary min-heap of timed entries ordered by (time, sequence): the earliest first, and entries
 * due at the same time in the order of their sequence numbers, so that equal times fire
 * deterministically. The simulator's event queue and the batch framework's deadlines use it.
 *
 * @module
 */

/** What the heap orders by; the caller assigns `seq` (increasing per insertion). */
export interface Timed {
  timeMs: number;
  seq: number;
}

/** Min-heap on (`timeMs`, `seq`); O(log n) push and pop, no allocation beyond the array. */
export class TimedHeap<E extends Timed> {
  private readonly items: E[] = [];

  get size(): number {
    return this.items.length;
  }

  /** The earliest entry, left in place; undefined when empty. */
  peek(): E | undefined {
    return this.items[0];
  }

  push(entry: E): void {
    const items = this.items;
    let i = items.length;
    items.push(entry);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = items[parent]!;
      if (before(p, entry)) break;
      items[i] = p;
      i = parent;
    }
    items[i] = entry;
  }

  /** Removes and returns the earliest entry; undefined when empty. */
  pop(): E | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    const n = items.length;
    if (top === undefined || last === undefined || n === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      let child = left;
      let c = items[left]!;
      if (right < n) {
        const r = items[right]!;
        if (before(r, c)) {
          child = right;
          c = r;
        }
      }
      if (before(last, c)) break;
      items[i] = c;
      i = child;
    }
    items[i] = last;
    return top;
  }
}

function before(a: Timed, b: Timed): boolean {
  return a.timeMs < b.timeMs || (a.timeMs === b.timeMs && a.seq < b.seq);
}
