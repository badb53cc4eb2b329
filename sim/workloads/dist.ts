/**
 * Sampling the distributions of `batch` workloads, always from a seeded {@link Rng} so that one
 * scenario seed reproduces the whole workload.
 *
 * @module
 */

import type { Rng } from "../../sdk/rng.ts";
import type { AmountDist, BatchDurationSpec, JobArrivalSpec } from "./spec.ts";

/** A draw from an exponential distribution with mean `mean`. */
export function exponential(rng: Rng, mean: number): number {
  return -Math.log(1 - rng.next()) * mean;
}

/** Index drawn with probability proportional to `weights` (uniform without them). */
export function pickIndex(rng: Rng, count: number, weights?: readonly number[]): number {
  if (!weights) return rng.int(count);
  let total = 0;
  for (const w of weights) total += w;
  let x = rng.next() * total;
  for (let i = 0; i < count; i++) {
    x -= weights[i]!;
    if (x < 0) return i;
  }
  // Rounding left a sliver: the last value with weight.
  for (let i = count - 1; i >= 0; i--) if (weights[i]! > 0) return i;
  return count - 1;
}

/** Draws an amount. */
export function sampleAmount(spec: AmountDist, rng: Rng): number {
  if (typeof spec === "number") return spec;
  if (spec.dist === "uniform") return spec.min + rng.next() * (spec.max - spec.min);
  return spec.values[pickIndex(rng, spec.values.length, spec.weights)]!;
}

/** Draws a count >= 1 (amounts are rounded to the nearest integer). */
export function sampleCount(spec: AmountDist, rng: Rng): number {
  return Math.max(1, Math.round(sampleAmount(spec, rng)));
}

/** Draws a task duration, in ms. */
export function sampleDurationMs(spec: BatchDurationSpec, rng: Rng): number {
  if (typeof spec === "number") return spec * 1000;
  switch (spec.dist) {
    case "exp":
      return exponential(rng, spec.meanSeconds * 1000);
    case "uniform":
      return (spec.minSeconds + rng.next() * (spec.maxSeconds - spec.minSeconds)) * 1000;
    case "empirical":
      return spec.values[pickIndex(rng, spec.values.length, spec.weights)]! * 1000;
  }
}

/** Draws the gap before the next job, in ms (`at` arrivals have no gaps). */
export function sampleGapMs(arrival: Exclude<JobArrivalSpec, { at: number }>, rng: Rng): number {
  if ("poisson" in arrival) return exponential(rng, 1000 / arrival.poisson.ratePerSecond);
  const e = arrival.empirical;
  return e.interArrivalSeconds[pickIndex(rng, e.interArrivalSeconds.length, e.weights)]! * 1000;
}

/** Rounds a resource amount down to the algebra's precision (thousandths), at least 0.001. */
export function amount3(n: number): number {
  return Math.max(0.001, Math.floor(n * 1000) / 1000);
}
