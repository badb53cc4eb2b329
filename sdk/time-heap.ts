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

/**
 * Min-heap on (`timeMs`, `seq`); O(log n) push and pop. The keys are copied into typed arrays
 * beside the entries, so the sift loops compare numbers in two contiguous arrays instead of
 * reading the fields of entries scattered over the heap: with the simulator's hundreds of
 * thousands of pending events, those reads were cache misses at every level. An entry's
 * `timeMs` and `seq` must therefore not change while it is in the heap.
 */
export class TimedHeap<E extends Timed> {
  private items: Array<E | undefined> = [];
  private times = new Float64Array(64);
  private seqs = new Float64Array(64);
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** The earliest entry, left in place; undefined when empty. */
  peek(): E | undefined {
    return this.count > 0 ? this.items[0] : undefined;
  }

  push(entry: E): void {
    if (this.count === this.times.length) this.grow();
    const items = this.items;
    const times = this.times;
    const seqs = this.seqs;
    const time = entry.timeMs;
    const seq = entry.seq;
    let i = this.count++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const pt = times[parent]!;
      if (pt < time || (pt === time && seqs[parent]! < seq)) break;
      items[i] = items[parent];
      times[i] = pt;
      seqs[i] = seqs[parent]!;
      i = parent;
    }
    items[i] = entry;
    times[i] = time;
    seqs[i] = seq;
  }

  /** Removes and returns the earliest entry; undefined when empty. */
  pop(): E | undefined {
    if (this.count === 0) return undefined;
    const items = this.items;
    const times = this.times;
    const seqs = this.seqs;
    const top = items[0];
    const n = --this.count;
    const last = items[n];
    const lastTime = times[n]!;
    const lastSeq = seqs[n]!;
    items[n] = undefined; // no reference kept to a popped entry
    if (n === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      let child = left;
      let ct = times[left]!;
      let cs = seqs[left]!;
      const right = left + 1;
      if (right < n) {
        const rt = times[right]!;
        const rs = seqs[right]!;
        if (rt < ct || (rt === ct && rs < cs)) {
          child = right;
          ct = rt;
          cs = rs;
        }
      }
      if (lastTime < ct || (lastTime === ct && lastSeq < cs)) break;
      items[i] = items[child];
      times[i] = ct;
      seqs[i] = cs;
      i = child;
    }
    items[i] = last;
    times[i] = lastTime;
    seqs[i] = lastSeq;
    return top;
  }

  private grow(): void {
    const times = new Float64Array(this.times.length * 2);
    times.set(this.times);
    this.times = times;
    const seqs = new Float64Array(this.seqs.length * 2);
    seqs.set(this.seqs);
    this.seqs = seqs;
  }
}
