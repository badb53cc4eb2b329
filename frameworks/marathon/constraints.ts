/**
 * Marathon placement constraints: `["hostname", "UNIQUE"]`, `["rack", "GROUP_BY", "3"]`, ...
 *
 * Two pure jobs: the value rules an app definition must obey ({@link constraintError}, used by the
 * app validator) and the placement check of one offer against the app's current placements
 * ({@link checkConstraints}), which answers with a sentence an operator can act on.
 *
 * Semantics follow Marathon's `Constraints.scala`: `hostname` (or `@hostname`) reads the offer's
 * hostname, `@region`/`@zone` read the fault domain, any other field reads the agent attribute of
 * that name; an offer without the field only satisfies `UNLIKE`; LIKE/UNLIKE regexes must match the
 * whole value (Java's `String.matches`).
 */
import { LRUCache } from "lru-cache";

/** The constraint operators Marathon apps accept. */
export const CONSTRAINT_OPERATORS = ["UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS"] as const;

/** One constraint operator. */
export type ConstraintOperator = (typeof CONSTRAINT_OPERATORS)[number];

/** A constraint as app JSON writes it: `[field, operator]` or `[field, operator, value]`. */
export type ConstraintTuple = readonly [string, string] | readonly [string, string, string];

/** A parsed constraint. */
export interface Constraint {
  readonly field: string;
  readonly operator: ConstraintOperator;
  /** Absent for `UNIQUE`, and optionally for `GROUP_BY`. */
  readonly value?: string;
}

/** Where an instance runs, or where an offer would put one. */
export interface Placement {
  readonly hostname: string;
  /** Agent attributes as text (`rack: "r1"`). */
  readonly attributes: Readonly<Record<string, string>>;
  /** Fault-domain region, read by the `@region` field. */
  readonly region?: string;
  /** Fault-domain zone, read by the `@zone` field. */
  readonly zone?: string;
}

/** The verdict of a placement check. */
export type PlacementDecision =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly reason: string; readonly constraint: Constraint };

const ALLOWED: PlacementDecision = { allowed: true };

/**
 * Longest LIKE/UNLIKE pattern accepted, in characters. Patterns run against every offer; a bound
 * keeps a hostile one from costing much.
 * @default 1000
 */
export const MAX_CONSTRAINT_PATTERN_LENGTH = 1000;

/**
 * How many instances one offer may receive in one pass when the framework sets no limit
 * (Marathon's `--max_instances_per_offer`).
 * @default 5
 */
export const DEFAULT_MAX_INSTANCES_PER_OFFER = 5;

/** Compiled whole-value regexes; patterns repeat across offers, compilation is not free. */
const regexCache = new LRUCache<string, RegExp | "invalid">({ max: 1024 });

/** `pattern` as a regex that must match the whole value, or null when it does not compile. */
function wholeMatchRegex(pattern: string): RegExp | null {
  let compiled = regexCache.get(pattern);
  if (compiled === undefined) {
    try {
      // No "u" flag: Marathon users write Java regexes, which allow escapes unicode mode rejects.
      compiled = new RegExp(`^(?:${pattern})$`);
    } catch {
      compiled = "invalid";
    }
    regexCache.set(pattern, compiled);
  }
  return compiled === "invalid" ? null : compiled;
}

function isOperator(text: string): text is ConstraintOperator {
  return (CONSTRAINT_OPERATORS as readonly string[]).includes(text);
}

/** Java's `String.toInt` accepts an optional sign and decimal digits within int32. */
function parseInt32(text: string): number | null {
  if (!/^[+-]?\d{1,10}$/.test(text)) return null;
  const n = Number(text);
  return n >= -2_147_483_648 && n <= 2_147_483_647 ? n : null;
}

/**
 * Checks a constraint as written in app JSON and returns the broken rule, or null when it is valid.
 * Messages are Marathon's where Marathon has one.
 */
export function constraintError(tuple: readonly unknown[]): string | null {
  if (tuple.length < 2 || tuple.length > 3) return "Each constraint must have either 2 or 3 fields";
  const [field, operator, value] = tuple;
  if (typeof field !== "string" || typeof operator !== "string" || (value !== undefined && typeof value !== "string")) {
    return "Constraint fields must be strings";
  }
  if (field === "") return "Missing field and operator";
  if (!isOperator(operator)) return `Constraint operator must be one of the following ${CONSTRAINT_OPERATORS.join(", ")}`;
  switch (operator) {
    case "UNIQUE":
      // An empty value is no value: Marathon's own examples and docs write ["hostname", "UNIQUE", ""],
      // so apps copied from them must pass (parseConstraint drops it).
      return value === undefined || value === "" ? null : "Value specified but not used";
    case "CLUSTER":
    case "IS":
      // An empty CLUSTER value is Marathon's "wherever the first instance lands"; IS needs a real one.
      if (value === undefined || (operator === "IS" && value === "")) return "Missing value";
      return null;
    case "GROUP_BY":
      if (value === undefined || parseInt32(value) !== null) return null;
      return "Value was specified but is not a number: GROUP_BY may either have no value or an integer value";
    case "MAX_PER": {
      const max = value === undefined ? null : parseInt32(value);
      return max !== null && max > 0 ? null : "Value was not specified or is not a number: MAX_PER must have a positive integer value";
    }
    case "LIKE":
    case "UNLIKE":
      if (value === undefined || value === "") return "A regular expression value must be provided";
      if (value.length > MAX_CONSTRAINT_PATTERN_LENGTH) return `regular expression must be at most ${MAX_CONSTRAINT_PATTERN_LENGTH} characters`;
      return wholeMatchRegex(value) === null ? `'${value}' is not a valid regular expression` : null;
  }
}

/**
 * Parses a constraint written as app JSON.
 * @throws RangeError naming the broken rule, for a constraint {@link constraintError} rejects
 */
export function parseConstraint(tuple: readonly unknown[]): Constraint {
  const problem = constraintError(tuple);
  if (problem !== null) throw new RangeError(`invalid constraint ${JSON.stringify(tuple)}: ${problem}`);
  const [field, operator, value] = tuple as [string, ConstraintOperator, string | undefined];
  return value === undefined || (operator === "UNIQUE" && value === "") ? { field, operator } : { field, operator, value };
}

/** The app JSON form of a constraint. */
export function constraintTuple(constraint: Constraint): ConstraintTuple {
  return constraint.value === undefined ? [constraint.field, constraint.operator] : [constraint.field, constraint.operator, constraint.value];
}

function isHostnameField(field: string): boolean {
  return field === "hostname" || field === "@hostname";
}

/** Reads a constraint's field from a placement; undefined when the agent lacks it. */
export function fieldValue(field: string, placement: Placement): string | undefined {
  if (isHostnameField(field)) return placement.hostname;
  if (field === "@region") return placement.region;
  if (field === "@zone") return placement.zone;
  return Object.prototype.hasOwnProperty.call(placement.attributes, field) ? placement.attributes[field] : undefined;
}

/** "host a" for hostnames, "rack r1" for attributes: how reasons name a value. */
function describe(field: string, value: string | undefined): string {
  const noun = isHostnameField(field) ? "host" : field.startsWith("@") ? field.slice(1) : field;
  return value === undefined ? `no ${noun}` : `${noun} ${value}`;
}

/** Instance counts per field value, over the placements that have the field. */
function countByValue(field: string, placed: readonly Placement[]): Map<string | undefined, number> {
  const counts = new Map<string | undefined, number>();
  for (const p of placed) {
    const value = fieldValue(field, p);
    counts.set(value, (counts.get(value) ?? 0) + 1);
  }
  return counts;
}

function deny(constraint: Constraint, detail: string): PlacementDecision {
  return { allowed: false, constraint, reason: `${constraint.operator} ${constraint.field}: ${detail}` };
}

/**
 * Decides whether one constraint lets an instance be placed on `offer`, given where the app's
 * running and staged instances already are (`placed`). A denial carries a reason such as
 * `UNIQUE hostname: host a already runs an instance`.
 */
export function checkConstraint(constraint: Constraint, offer: Placement, placed: readonly Placement[]): PlacementDecision {
  const { field, operator } = constraint;
  const value = constraint.value ?? "";
  const offered = fieldValue(field, offer);
  if (offered === undefined) {
    // Marathon: an offer without the field satisfies only UNLIKE.
    return operator === "UNLIKE" ? ALLOWED : deny(constraint, `offer has no ${isHostnameField(field) ? "hostname" : `attribute '${field}'`}`);
  }
  switch (operator) {
    case "UNIQUE": {
      const taken = placed.some((p) => fieldValue(field, p) === offered);
      return taken ? deny(constraint, `${describe(field, offered)} already runs an instance`) : ALLOWED;
    }
    case "CLUSTER": {
      if (value !== "") return offered === value ? ALLOWED : deny(constraint, `offer has ${describe(field, offered)}, needs ${value}`);
      // No value: the first placement picks the value every later instance must share.
      const first = placed[0];
      if (first === undefined) return ALLOWED;
      const chosen = fieldValue(field, first);
      return chosen === offered ? ALLOWED : deny(constraint, `instances already run on ${describe(field, chosen)}, offer has ${offered}`);
    }
    case "IS":
      return offered === value ? ALLOWED : deny(constraint, `offer has ${describe(field, offered)}, needs ${value}`);
    case "LIKE": {
      const regex = wholeMatchRegex(value);
      return regex !== null && value !== "" && regex.test(offered) ? ALLOWED : deny(constraint, `${describe(field, offered)} does not match /${value}/`);
    }
    case "UNLIKE": {
      const regex = wholeMatchRegex(value);
      return regex !== null && value !== "" && !regex.test(offered) ? ALLOWED : deny(constraint, `${describe(field, offered)} matches /${value}/`);
    }
    case "MAX_PER": {
      const max = parseInt32(value) ?? 0;
      const here = countByValue(field, placed).get(offered) ?? 0;
      return here < max ? ALLOWED : deny(constraint, `${describe(field, offered)} already runs ${here} instance${here === 1 ? "" : "s"} (max ${max})`);
    }
    case "GROUP_BY":
      return checkGroupBy(constraint, offered, placed);
  }
}

/**
 * GROUP_BY spreads instances evenly over the values of a field. As in Marathon, an offer with a value
 * no instance uses yet is always fine; one with a used value is fine only when at least `value`
 * groups exist (the expected number of distinct values) and its group is among the smallest.
 */
function checkGroupBy(constraint: Constraint, offered: string, placed: readonly Placement[]): PlacementDecision {
  const minimumGroups = Math.max(0, parseInt32(constraint.value ?? "") ?? 0);
  const counts = countByValue(constraint.field, placed);
  const here = counts.get(offered);
  if (here === undefined) return ALLOWED;
  const smallest = Math.min(...counts.values());
  if (counts.size < minimumGroups) {
    return deny(constraint, `${describe(constraint.field, offered)} already runs an instance and only ${counts.size} of ${minimumGroups} values are in use`);
  }
  if (here !== smallest) {
    return deny(constraint, `${describe(constraint.field, offered)} runs ${here} instances, more than the least loaded group (${smallest})`);
  }
  return ALLOWED;
}

/** Accepts parsed constraints or their app JSON form. */
function asConstraint(c: Constraint | ConstraintTuple): Constraint {
  return Array.isArray(c) ? parseConstraint(c) : (c as Constraint);
}

/**
 * Checks every constraint; the first that denies wins (its reason is the answer).
 * @throws RangeError for a malformed constraint tuple (validated apps never have one)
 */
export function checkConstraints(
  constraints: ReadonlyArray<Constraint | ConstraintTuple>,
  offer: Placement,
  placed: readonly Placement[],
): PlacementDecision {
  for (const c of constraints) {
    const decision = checkConstraint(asConstraint(c), offer, placed);
    if (!decision.allowed) return decision;
  }
  return ALLOWED;
}

/** Inputs of {@link instancesForOffer}. */
export interface OfferLaunchLimits {
  /** Instances the app still wants launched. */
  wanted: number;
  /** Cap per offer and pass. @default DEFAULT_MAX_INSTANCES_PER_OFFER (5) */
  maxInstancesPerOffer?: number;
  /**
   * Whether the offer still has room (resources, ports) for one more instance after
   * `alreadyPlaced` have been carved out of it. @default always true
   */
  fitsAnother?: (alreadyPlaced: number) => boolean;
}

/** How many instances to launch on one offer, and why not more. */
export interface OfferLaunchPlan {
  count: number;
  /** Why the count stopped where it did (for the queue's "last unused offers" info). */
  stoppedBy: "wanted" | "maxInstancesPerOffer" | "resources" | "constraint";
  /** The constraint denial that stopped it, when one did. */
  denial?: PlacementDecision;
}

/**
 * Decides how many instances of one app go on one offer. Each instance placed there changes what
 * the constraints allow for the next (UNIQUE hostname allows one per host, MAX_PER n allows n), so
 * the check repeats with the offer counted as already holding the earlier ones.
 */
export function instancesForOffer(
  constraints: ReadonlyArray<Constraint | ConstraintTuple>,
  offer: Placement,
  placed: readonly Placement[],
  limits: OfferLaunchLimits,
): OfferLaunchPlan {
  const parsed = constraints.map(asConstraint);
  const cap = Math.max(0, Math.floor(limits.maxInstancesPerOffer ?? DEFAULT_MAX_INSTANCES_PER_OFFER));
  const wanted = Math.max(0, Math.floor(limits.wanted));
  const withOffer = [...placed];
  let count = 0;
  for (;;) {
    if (count >= wanted) return { count, stoppedBy: "wanted" };
    if (count >= cap) return { count, stoppedBy: "maxInstancesPerOffer" };
    if (limits.fitsAnother && !limits.fitsAnother(count)) return { count, stoppedBy: "resources" };
    const decision = checkConstraints(parsed, offer, withOffer);
    if (!decision.allowed) return { count, stoppedBy: "constraint", denial: decision };
    withOffer.push(offer);
    count++;
  }
}
