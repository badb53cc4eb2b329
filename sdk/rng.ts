/**
 * Randomness as the cores see it. Every random choice (agent shuffles, backoff jitter, ids) comes
 * from an injected `Rng`, so one seed reproduces a whole run in the simulator.
 */
export interface Rng {
  /** A uniformly distributed float in [0, 1). */
  next(): number;
  /** A uniformly distributed integer in [0, maxExclusive). */
  int(maxExclusive: number): number;
  /** A random RFC 4122 version-4 UUID string built from this generator's stream. */
  uuid(): string;
  /** An independent generator derived from this one and `label`, for a sub-component. */
  fork(label: string): Rng;
}

const UINT32 = 0x1_0000_0000;

/** 32-bit FNV-1a hash of a string; used to turn labels and seeds into generator state. */
function hashString(text: string, basis = 0x811c9dc5): number {
  let hash = basis >>> 0;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** Spreads a 32-bit value over the state space (murmur3's finaliser), so nearby seeds diverge. */
function mix32(value: number): number {
  let x = value >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b) >>> 0;
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * A small, fast, seedable generator (the sfc32 construction: 128 bits of state, period at least
 * 2^32). Not for cryptography; for reproducible decisions and simulation.
 */
export class SeededRng implements Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** @param seed any integer or string; equal seeds give equal streams. */
  constructor(seed: number | string) {
    const base = typeof seed === "number" ? hashString(String(seed)) : hashString(seed);
    this.a = mix32(base ^ 0x9e3779b9);
    this.b = mix32(base ^ 0x243f6a88);
    this.c = mix32(base ^ 0xb7e15162);
    this.d = 1;
    // Discard the first outputs: sfc32 needs a few rounds to decorrelate from its seed.
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  /** The next raw 32-bit unsigned integer. */
  nextUint32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  next(): number {
    return this.nextUint32() / UINT32;
  }

  int(maxExclusive: number): number {
    if (!Number.isInteger(maxExclusive) || maxExclusive <= 0) {
      throw new RangeError(`Rng.int: bound must be a positive integer, got ${maxExclusive}`);
    }
    return Math.floor(this.next() * maxExclusive);
  }

  uuid(): string {
    const hex: string[] = [];
    for (let i = 0; i < 4; i++) hex.push(this.nextUint32().toString(16).padStart(8, "0"));
    const s = hex.join("");
    const variant = ((parseInt(s[16]!, 16) & 0x3) | 0x8).toString(16);
    // Array.join makes one flat string; a template literal makes a tree of string pieces (V8 cons
    // strings) several times its size, and uuids are kept by the hundred thousand in simulations.
    return [s.slice(0, 8), s.slice(8, 12), `4${s.slice(13, 16)}`, `${variant}${s.slice(17, 20)}`, s.slice(20, 32)].join("-");
  }

  fork(label: string): Rng {
    return new SeededRng(`${this.nextUint32()}:${label}`);
  }
}

/** In-place Fisher-Yates shuffle driven by `rng`. */
export function shuffleInPlace<T>(items: T[], rng: Rng): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const tmp = items[i]!;
    items[i] = items[j]!;
    items[j] = tmp;
  }
  return items;
}
