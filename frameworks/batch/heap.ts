/**
 * A small binary min-heap ordered by (time, insertion sequence), for the batch core's deadlines
 * and delayed task releases. Ties keep insertion order, so equal times fire deterministically.
 *
 * @module
 */

interface Entry<T> {
  atMs: number;
  seq: number;
  value: T;
}

export class TimeHeap<T> {
  private readonly items: Entry<T>[] = [];
  private seq = 0;

  get size(): number {
    return this.items.length;
  }

  push(atMs: number, value: T): void {
    const items = this.items;
    items.push({ atMs, seq: this.seq++, value });
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!less(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  /** The earliest time, or undefined when empty. */
  peekTime(): number | undefined {
    return this.items[0]?.atMs;
  }

  /** Removes and returns the earliest entry's value. */
  pop(): T | undefined {
    const items = this.items;
    const top = items[0];
    if (top === undefined) return undefined;
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let min = i;
        if (l < items.length && less(items[l]!, items[min]!)) min = l;
        if (r < items.length && less(items[r]!, items[min]!)) min = r;
        if (min === i) break;
        [items[i], items[min]] = [items[min]!, items[i]!];
        i = min;
      }
    }
    return top.value;
  }
}

function less<T>(a: Entry<T>, b: Entry<T>): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}
