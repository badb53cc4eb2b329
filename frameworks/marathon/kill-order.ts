/**
 * Which instances go when an app scales down.
 *
 * Marathon's `ScalingProposition`: instances an operator asked to kill go first; then, when the app
 * has GROUP_BY constraints, instances whose removal evens out the spread; then the rest by how
 * little they are worth: not yet launched, unreachable, unhealthy, staging, starting, running.
 * Among equals, `killSelection` decides: YOUNGEST_FIRST (the default) kills the most recently
 * started, OLDEST_FIRST the longest running.
 */
import type { KillSelection } from "./app-spec.ts";
import { fieldValue, parseConstraint, type Constraint, type ConstraintTuple, type Placement } from "./constraints.ts";

/** The lifecycle stage of an instance, as far as kill order cares. */
export type KillCandidateState = "unscheduled" | "unreachable" | "staging" | "starting" | "running";

/** An instance that could be killed. */
export interface KillCandidate {
  readonly id: string;
  readonly state: KillCandidateState;
  /** Health-check verdict; undefined when the app has no checks or none has answered yet. */
  readonly healthy?: boolean;
  /** When the instance entered its state (staged, started, running since), epoch ms. */
  readonly sinceMs: number;
  /** Where it runs; absent for unscheduled instances. */
  readonly placement?: Placement;
  /** Named by the operator (e.g. `DELETE /v2/apps/{id}/tasks/{taskId}?scale=true`). */
  readonly sentenced?: boolean;
}

/** Options of {@link selectInstancesToKill}. */
export interface KillSelectionOptions {
  /** @default "YOUNGEST_FIRST" */
  killSelection?: KillSelection;
  /** The app's constraints; GROUP_BY ones steer the choice. @default [] */
  constraints?: ReadonlyArray<Constraint | ConstraintTuple>;
}

/**
 * Lower ranks are killed first: what is not yet launched costs nothing to drop, what cannot be
 * reached or fails its checks serves nobody, and what is still starting has served nobody yet.
 */
export function killRank(candidate: KillCandidate): number {
  if (candidate.state === "unscheduled") return 0;
  if (candidate.state === "unreachable") return 1;
  if (candidate.healthy === false) return 2;
  if (candidate.state === "staging") return 3;
  if (candidate.state === "starting") return 4;
  return 5;
}

/** A comparator ordering candidates from first to last to kill; ties broken by id, so it is total. */
export function compareForKill(selection: KillSelection = "YOUNGEST_FIRST"): (a: KillCandidate, b: KillCandidate) => number {
  return (a, b) => {
    const byRank = killRank(a) - killRank(b);
    if (byRank !== 0) return byRank;
    const byAge = selection === "YOUNGEST_FIRST" ? b.sinceMs - a.sinceMs : a.sinceMs - b.sinceMs;
    if (byAge !== 0) return byAge;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  };
}

/**
 * The spread of one GROUP_BY constraint: instances per field value, updated as instances are
 * chosen, so each choice costs a pass over the groups rather than over all instances.
 */
class Distribution {
  private readonly groupOf = new Map<string, number>();
  private readonly members: string[][] = [];
  private readonly sizes: number[] = [];
  private readonly originalDifference: number;

  constructor(constraint: Constraint, candidates: readonly KillCandidate[]) {
    const indexOf = new Map<string | undefined, number>();
    for (const c of candidates) {
      if (c.placement === undefined) continue;
      const value = fieldValue(constraint.field, c.placement);
      let index = indexOf.get(value);
      if (index === undefined) {
        index = this.members.length;
        indexOf.set(value, index);
        this.members.push([]);
        this.sizes.push(0);
      }
      this.members[index]!.push(c.id);
      this.sizes[index]!++;
      this.groupOf.set(c.id, index);
    }
    this.originalDifference = this.difference();
  }

  /** Largest minus smallest group now (0 without groups). */
  difference(): number {
    return this.sizes.length === 0 ? 0 : Math.max(...this.sizes) - Math.min(...this.sizes);
  }

  /** The difference if `id` were removed too. */
  private differenceWithout(id: string): number {
    const index = this.groupOf.get(id);
    if (index === undefined) return this.difference();
    this.sizes[index]!--;
    const after = this.difference();
    this.sizes[index]!++;
    return after;
  }

  /** Acceptable when the spread stays within 1 or beats the original one (Marathon's `isMoreEvenWithout`). */
  acceptable(id: string): boolean {
    const after = this.differenceWithout(id);
    return after <= 1 || this.originalDifference > after;
  }

  /** Records that `id` was chosen. */
  remove(id: string): void {
    const index = this.groupOf.get(id);
    if (index !== undefined) this.sizes[index]!--;
  }

  /** Ids (not yet chosen) in the currently largest groups, or none when the spread is even. */
  fromLargest(chosen: ReadonlySet<string>): Set<string> {
    if (this.difference() === 0) return new Set();
    const largest = Math.max(...this.sizes);
    const out = new Set<string>();
    this.sizes.forEach((size, index) => {
      if (size === largest) for (const id of this.members[index]!) if (!chosen.has(id)) out.add(id);
    });
    return out;
  }
}

/**
 * Chooses `count` instances to kill (fewer when there are fewer), in kill order. Deterministic for
 * a given input.
 */
export function selectInstancesToKill(candidates: readonly KillCandidate[], count: number, options: KillSelectionOptions = {}): KillCandidate[] {
  const wanted = Math.max(0, Math.min(Math.floor(count), candidates.length));
  const order = compareForKill(options.killSelection ?? "YOUNGEST_FIRST");
  const sentenced = candidates.filter((c) => c.sentenced).sort(order);
  const rest = candidates.filter((c) => !c.sentenced).sort(order);
  const chosen: KillCandidate[] = sentenced.slice(0, wanted);
  const chosenIds = new Set(chosen.map((c) => c.id));

  const groupBy = (options.constraints ?? [])
    .map((c) => (Array.isArray(c) ? parseConstraint(c) : (c as Constraint)))
    .filter((c) => c.operator === "GROUP_BY");
  if (groupBy.length > 0) {
    // Unlaunched instances do not count in any spread, and are free to drop: take them first.
    for (const c of rest) if (chosen.length < wanted && c.placement === undefined && !chosenIds.has(c.id)) take(c);
    const distributions = groupBy.map((constraint) => new Distribution(constraint, rest));
    while (chosen.length < wanted) {
      // Prefer instances from the largest groups of an uneven spread, then anyone, each in kill order.
      const preferred = new Set(distributions.flatMap((d) => [...d.fromLargest(chosenIds)]));
      const tried = [...rest.filter((c) => preferred.has(c.id)), ...rest].filter((c) => !chosenIds.has(c.id));
      const next = tried.find((c) => distributions.every((d) => d.acceptable(c.id)));
      if (next === undefined) break;
      take(next);
      for (const d of distributions) d.remove(next.id);
    }
  }
  for (const c of rest) if (chosen.length < wanted && !chosenIds.has(c.id)) take(c);
  return chosen;

  function take(c: KillCandidate): void {
    chosen.push(c);
    chosenIds.add(c.id);
  }
}
