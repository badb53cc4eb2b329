/**
 * The resource algebra: what agents have, frameworks are offered and tasks consume.
 *
 * A {@link Resources} value is an immutable, normalised bag of named resources of three kinds —
 * scalars (cpus, mem, disk, gpus, any other name), ranges (ports) and sets — each either
 * unreserved (`*`) or reserved for a role. Scalars are held in fixed point (thousandths, as Mesos
 * keeps three decimal places) so that repeated adds and subtracts never drift: 0.1 + 0.2 cpus is
 * exactly 0.3 cpus.
 */
import { roleNameError, isSelfOrAncestor, UNRESERVED_ROLE } from "./roles.ts";

/** Fixed-point scale of scalar quantities: values are stored in thousandths. */
export const SCALAR_SCALE = 1000;

/** Stable error codes of the resource algebra. */
export type ResourceErrorCode = "CORRAL_ERR_BAD_RESOURCES" | "CORRAL_ERR_INSUFFICIENT_RESOURCES";

/** A resource string, JSON or arithmetic request that breaks a rule. */
export class ResourceError extends Error {
  /** @param token the offending piece of input, when there is one */
  constructor(
    readonly code: ResourceErrorCode,
    message: string,
    readonly token?: string,
  ) {
    super(message);
    this.name = "ResourceError";
  }
}

/** An inclusive integer interval, `[begin, end]`. */
export interface Range {
  readonly begin: number;
  readonly end: number;
}

/** A scalar quantity of one resource name for one role. `millis` is the value in thousandths. */
export interface ScalarEntry {
  readonly kind: "scalar";
  readonly name: string;
  readonly role: string;
  readonly millis: number;
}

/** Disjoint, sorted, coalesced ranges of one resource name for one role. */
export interface RangesEntry {
  readonly kind: "ranges";
  readonly name: string;
  readonly role: string;
  readonly ranges: readonly Range[];
}

/** A sorted set of distinct items of one resource name for one role. */
export interface SetEntry {
  readonly kind: "set";
  readonly name: string;
  readonly role: string;
  readonly items: readonly string[];
}

/** One normalised entry of a {@link Resources} value. */
export type ResourceEntry = ScalarEntry | RangesEntry | SetEntry;

/** The JSON form of one resource, shaped like Mesos's `Resource` in its JSON endpoints. */
export interface ResourceJson {
  name: string;
  type: "SCALAR" | "RANGES" | "SET";
  /** Reservation role; absent or `*` means unreserved. */
  role?: string;
  scalar?: { value: number };
  ranges?: { range: Array<{ begin: number; end: number }> };
  set?: { item: string[] };
}

/** Converts a decimal quantity to fixed point, rejecting what cannot be a quantity. */
export function toMillis(value: number, what = "value"): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `${what} must be a finite number, got ${String(value)}`, String(value));
  }
  if (value < 0) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `${what} must not be negative, got ${value}`, String(value));
  const millis = Math.round(value * SCALAR_SCALE);
  if (!Number.isSafeInteger(millis)) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `${what} is too large: ${value}`, String(value));
  return millis;
}

/** Converts fixed point back to a decimal number with at most three decimals. */
export function fromMillis(millis: number): number {
  return millis / SCALAR_SCALE;
}

/** Longest resource name accepted anywhere: agent resources, offers, quota, the operator API. */
export const MAX_RESOURCE_NAME_LENGTH = 64;

/**
 * The resource-name rule as a regular expression source, for JSON schemas; code checks names
 * with {@link resourceNameProblem}. One rule for every place that takes a name, so a resource an
 * agent may advertise is one an operator may set quota on.
 */
export const RESOURCE_NAME_PATTERN = `^[A-Za-z0-9_.\\-]{1,${MAX_RESOURCE_NAME_LENGTH}}$`;

const RESOURCE_NAME = new RegExp(RESOURCE_NAME_PATTERN);

/**
 * Why `name` cannot be a resource name, or `undefined` when it can: 1-{@link MAX_RESOURCE_NAME_LENGTH}
 * characters from `A-Z a-z 0-9 _ . -` (Mesos's names `cpus`, `mem`, `disk`, `ports`, `gpus` and
 * custom ones such as `bandwidth.net`).
 */
export function resourceNameProblem(name: unknown): string | undefined {
  if (typeof name !== "string") return `must be a string, got ${typeof name}`;
  if (RESOURCE_NAME.test(name)) return undefined;
  if (name.length === 0) return "must not be empty";
  if (name.length > MAX_RESOURCE_NAME_LENGTH) return `must be at most ${MAX_RESOURCE_NAME_LENGTH} characters, got ${name.length}`;
  return "use only letters, digits, '_', '.' or '-'";
}

function checkName(name: string, token: string): void {
  const problem = resourceNameProblem(name);
  if (problem !== undefined) {
    throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `invalid resource name '${String(name)}' in '${token}': ${problem}`, token);
  }
}

function checkRole(role: string, token: string): void {
  const problem = roleNameError(role, true);
  if (problem !== null) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `invalid role '${role}' in '${token}': ${problem}`, token);
}

function entryKey(entry: { name: string; role: string }): string {
  return `${entry.name}\u0000${entry.role}`;
}

function compareEntries(a: ResourceEntry, b: ResourceEntry): number {
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  if (a.role !== b.role) return a.role < b.role ? -1 : 1;
  return 0;
}

/** Sorts and coalesces ranges; overlapping input is an error unless `allowOverlap`. */
function normaliseRanges(input: readonly Range[], token: string, allowOverlap: boolean): Range[] {
  for (const r of input) {
    if (!Number.isSafeInteger(r.begin) || !Number.isSafeInteger(r.end) || r.begin < 0 || r.end < 0) {
      throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `range bounds must be non-negative integers in '${token}'`, token);
    }
    if (r.begin > r.end) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `range ${r.begin}-${r.end} ends before it begins in '${token}'`, token);
  }
  const sorted = [...input].sort((a, b) => a.begin - b.begin || a.end - b.end);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.begin <= last.end) {
      if (!allowOverlap) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `overlapping ranges ${last.begin}-${last.end} and ${r.begin}-${r.end} in '${token}'`, token);
      if (r.end > last.end) out[out.length - 1] = { begin: last.begin, end: r.end };
    } else if (last && r.begin === last.end + 1) {
      out[out.length - 1] = { begin: last.begin, end: r.end };
    } else {
      out.push({ begin: r.begin, end: r.end });
    }
  }
  return out;
}

function rangesUnion(a: readonly Range[], b: readonly Range[]): Range[] {
  return normaliseRanges([...a, ...b], "", true);
}

function rangesContain(outer: readonly Range[], inner: readonly Range[]): boolean {
  let i = 0;
  for (const r of inner) {
    while (i < outer.length && outer[i]!.end < r.begin) i++;
    const o = outer[i];
    if (!o || o.begin > r.begin || o.end < r.end) return false;
  }
  return true;
}

/** The ranges in both `a` and `b` (each sorted and disjoint, as a {@link RangesEntry}'s are). */
export function rangesIntersection(a: readonly Range[], b: readonly Range[]): Range[] {
  const out: Range[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const begin = Math.max(a[i]!.begin, b[j]!.begin);
    const end = Math.min(a[i]!.end, b[j]!.end);
    if (begin <= end) out.push({ begin, end });
    if (a[i]!.end < b[j]!.end) i++;
    else j++;
  }
  return out;
}

/** The ranges of `a` not in `b` (each sorted and disjoint; `b` need not lie within `a`). */
export function rangesDifference(a: readonly Range[], b: readonly Range[]): Range[] {
  const out: Range[] = [];
  let j = 0;
  for (const r of a) {
    let begin = r.begin;
    while (j < b.length && b[j]!.end < begin) j++;
    let k = j;
    while (k < b.length && b[k]!.begin <= r.end) {
      const cut = b[k]!;
      if (cut.begin > begin) out.push({ begin, end: cut.begin - 1 });
      begin = Math.max(begin, cut.end + 1);
      k++;
    }
    if (begin <= r.end) out.push({ begin, end: r.end });
  }
  return out;
}

function rangesSize(ranges: readonly Range[]): number {
  let n = 0;
  for (const r of ranges) n += r.end - r.begin + 1;
  return n;
}

function setsContain(outer: readonly string[], inner: readonly string[]): boolean {
  let i = 0;
  for (const item of inner) {
    while (i < outer.length && outer[i]! < item) i++;
    if (outer[i] !== item) return false;
  }
  return true;
}

function isEmptyEntry(entry: ResourceEntry): boolean {
  switch (entry.kind) {
    case "scalar":
      return entry.millis === 0;
    case "ranges":
      return entry.ranges.length === 0;
    case "set":
      return entry.items.length === 0;
  }
}

function kindMismatch(a: ResourceEntry, b: ResourceEntry): ResourceError {
  return new ResourceError(
    "CORRAL_ERR_BAD_RESOURCES",
    `resource '${a.name}' is a ${a.kind} in one operand and a ${b.kind} in the other`,
    a.name,
  );
}

/**
 * Refuses a name that is of one kind for one role and of another for the next: `entries` are
 * sorted by (name, role), so the entries of one name are neighbours. Such a bag would count a
 * scalar `ports` among its quantities and could not be flattened.
 */
function checkOneKindPerName(entries: readonly ResourceEntry[]): void {
  for (let i = 1; i < entries.length; i++) {
    const a = entries[i - 1]!;
    const b = entries[i]!;
    if (a.name === b.name && a.kind !== b.kind) {
      throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `resource '${a.name}' is a ${a.kind} for role '${a.role}' and a ${b.kind} for role '${b.role}'`, a.name);
    }
  }
}

function addEntries(a: ResourceEntry, b: ResourceEntry): ResourceEntry {
  if (a.kind !== b.kind) throw kindMismatch(a, b);
  switch (a.kind) {
    case "scalar":
      return { kind: "scalar", name: a.name, role: a.role, millis: a.millis + (b as ScalarEntry).millis };
    case "ranges":
      return { kind: "ranges", name: a.name, role: a.role, ranges: rangesUnion(a.ranges, (b as RangesEntry).ranges) };
    case "set":
      return { kind: "set", name: a.name, role: a.role, items: [...new Set([...a.items, ...(b as SetEntry).items])].sort() };
  }
}

function entryContains(a: ResourceEntry, b: ResourceEntry): boolean {
  if (a.kind !== b.kind) return false;
  switch (a.kind) {
    case "scalar":
      return a.millis >= (b as ScalarEntry).millis;
    case "ranges":
      return rangesContain(a.ranges, (b as RangesEntry).ranges);
    case "set":
      return setsContain(a.items, (b as SetEntry).items);
  }
}

/** `a - b`, assuming `a` contains `b`. */
function subtractEntry(a: ResourceEntry, b: ResourceEntry): ResourceEntry {
  switch (a.kind) {
    case "scalar":
      return { kind: "scalar", name: a.name, role: a.role, millis: a.millis - (b as ScalarEntry).millis };
    case "ranges":
      return { kind: "ranges", name: a.name, role: a.role, ranges: rangesDifference(a.ranges, (b as RangesEntry).ranges) };
    case "set": {
      const drop = new Set((b as SetEntry).items);
      return { kind: "set", name: a.name, role: a.role, items: a.items.filter((item) => !drop.has(item)) };
    }
  }
}

function entryEquals(a: ResourceEntry, b: ResourceEntry): boolean {
  if (a.kind !== b.kind || a.name !== b.name || a.role !== b.role) return false;
  switch (a.kind) {
    case "scalar":
      return a.millis === (b as ScalarEntry).millis;
    case "ranges": {
      const other = (b as RangesEntry).ranges;
      return a.ranges.length === other.length && a.ranges.every((r, i) => r.begin === other[i]!.begin && r.end === other[i]!.end);
    }
    case "set": {
      const other = (b as SetEntry).items;
      return a.items.length === other.length && a.items.every((item, i) => item === other[i]);
    }
  }
}

function formatValue(entry: ResourceEntry): string {
  switch (entry.kind) {
    case "scalar":
      return String(fromMillis(entry.millis));
    case "ranges":
      return `[${entry.ranges.map((r) => `${r.begin}-${r.end}`).join(",")}]`;
    case "set":
      return `{${entry.items.join(",")}}`;
  }
}

/** Scalar totals by resource name, in thousandths; reservations are summed together. */
export type ScalarQuantities = Map<string, number>;

/**
 * Adds (`sign` 1) or takes away (-1) `delta` to running totals in thousandths, dropping names that
 * reach 0 (totals kept as resources come and go, instead of summing every holder on asking).
 */
export function addQuantities(totals: ScalarQuantities, delta: ReadonlyMap<string, number>, sign: 1 | -1): void {
  for (const [name, millis] of delta) {
    const next = (totals.get(name) ?? 0) + sign * millis;
    if (next === 0) totals.delete(name);
    else totals.set(name, next);
  }
}

/**
 * An immutable bag of resources. Every operation returns a new value; entries are kept sorted by
 * (name, role) with empty entries dropped, so equal bags have equal entry lists.
 */
export class Resources {
  private static readonly EMPTY = new Resources([]);

  /** Normalised entries: sorted by (name, role), one per (name, role), none empty. */
  readonly entries: readonly ResourceEntry[];
  /** Lazily computed scalar totals (the value is immutable, so they never go stale). */
  private quantitiesCache: ReadonlyMap<string, number> | undefined;
  private unreservedQuantitiesCache: ReadonlyMap<string, number> | undefined;

  private constructor(entries: readonly ResourceEntry[]) {
    this.entries = entries;
  }

  /** The empty bag. */
  static empty(): Resources {
    return Resources.EMPTY;
  }

  /** Builds a bag from entries of any order, merging same (name, role) entries. */
  static of(entries: Iterable<ResourceEntry>): Resources {
    const byKey = new Map<string, ResourceEntry>();
    for (const raw of entries) {
      const entry = checkedEntry(raw);
      const key = entryKey(entry);
      const existing = byKey.get(key);
      byKey.set(key, existing ? addEntries(existing, entry) : entry);
    }
    return Resources.fromSortedUnchecked([...byKey.values()].sort(compareEntries));
  }

  private static fromSortedUnchecked(entries: ResourceEntry[]): Resources {
    const kept = entries.filter((e) => !isEmptyEntry(e));
    checkOneKindPerName(kept);
    return kept.length === 0 ? Resources.EMPTY : new Resources(kept);
  }

  /** One scalar resource: `Resources.scalar("cpus", 0.5)` or reserved `Resources.scalar("cpus", 2, "eng")`. */
  static scalar(name: string, value: number, role: string = UNRESERVED_ROLE): Resources {
    return Resources.of([{ kind: "scalar", name, role, millis: toMillis(value, name) }]);
  }

  /** One ranges resource, e.g. `Resources.ranges("ports", [{begin: 31000, end: 32000}])`. */
  static ranges(name: string, ranges: readonly Range[], role: string = UNRESERVED_ROLE): Resources {
    return Resources.of([{ kind: "ranges", name, role, ranges: normaliseRanges(ranges, name, false) }]);
  }

  /** One set resource. Duplicate items are an error. */
  static set(name: string, items: readonly string[], role: string = UNRESERVED_ROLE): Resources {
    return Resources.of([{ kind: "set", name, role, items: normaliseSet(items, name) }]);
  }

  /**
   * Parses the Mesos text form used by agent flags:
   * `cpus:4;mem:8192;disk:20000;ports:[31000-32000];cpus(eng):2;zones:{a,b}`.
   * A name may carry a reservation role in parentheses; `(*)` is unreserved. Whitespace around
   * names, roles, `:`, `;` and values is ignored (`cpus : 2; disk( eng ) : 10`).
   * @throws ResourceError naming the offending token
   */
  static parse(text: string): Resources {
    if (typeof text !== "string") throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", "resources must be a string");
    const entries: ResourceEntry[] = [];
    const seen = new Set<string>();
    for (const rawToken of text.split(";")) {
      const token = rawToken.trim();
      if (token === "") continue;
      const entry = parseToken(token);
      const key = entryKey(entry);
      if (seen.has(key)) {
        throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `resource '${entry.name}' for role '${entry.role}' is given twice (at '${token}')`, token);
      }
      seen.add(key);
      entries.push(entry);
    }
    return Resources.of(entries);
  }

  /**
   * Reads the JSON form: an array of Mesos-style resource objects (see {@link ResourceJson}).
   * @throws ResourceError naming the offending element
   */
  static fromJSON(json: unknown): Resources {
    if (!Array.isArray(json)) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", "resources JSON must be an array");
    return Resources.of(json.map((element, index) => parseJsonElement(element, index)));
  }

  /** True when the bag holds nothing. */
  isEmpty(): boolean {
    return this.entries.length === 0;
  }

  /** The sum of two bags. Merging a scalar with a non-scalar of the same name is an error. */
  add(other: Resources): Resources {
    if (other.entries.length === 0) return this;
    if (this.entries.length === 0) return other;
    const out: ResourceEntry[] = [];
    const a = this.entries;
    const b = other.entries;
    let i = 0;
    let j = 0;
    while (i < a.length || j < b.length) {
      const x = a[i];
      const y = b[j];
      const order = x === undefined ? 1 : y === undefined ? -1 : compareEntries(x, y);
      if (order < 0) {
        out.push(x!);
        i++;
      } else if (order > 0) {
        out.push(y!);
        j++;
      } else {
        out.push(addEntries(x!, y!));
        i++;
        j++;
      }
    }
    checkOneKindPerName(out);
    return new Resources(out);
  }

  /**
   * The difference `this - other`. Refuses to go negative: every part of `other` must be in `this`.
   * @throws ResourceError with code CORRAL_ERR_INSUFFICIENT_RESOURCES otherwise
   */
  subtract(other: Resources): Resources {
    const result = this.trySubtract(other);
    if (result === null) {
      throw new ResourceError(
        "CORRAL_ERR_INSUFFICIENT_RESOURCES",
        `cannot subtract ${other.toString()} from ${this.toString()}: not contained`,
      );
    }
    return result;
  }

  /** Like {@link subtract}, but answers `null` instead of throwing when `other` is not contained. */
  trySubtract(other: Resources): Resources | null {
    if (other.entries.length === 0) return this;
    // A whole agent offered at once, or a whole offer given back: the common case in allocation.
    if (other === this) return Resources.EMPTY;
    const out: ResourceEntry[] = [];
    const a = this.entries;
    const b = other.entries;
    let j = 0;
    for (const x of a) {
      const y = b[j];
      if (y !== undefined && compareEntries(x, y) === 0) {
        if (!entryContains(x, y)) return null;
        const rest = subtractEntry(x, y);
        if (!isEmptyEntry(rest)) out.push(rest);
        j++;
      } else {
        if (y !== undefined && compareEntries(x, y) > 0) return null;
        out.push(x);
      }
    }
    if (j < b.length) return null;
    return out.length === 0 ? Resources.EMPTY : new Resources(out);
  }

  /** True when every part of `other` (with its reservation) is in this bag. */
  contains(other: Resources): boolean {
    const a = this.entries;
    let i = 0;
    for (const y of other.entries) {
      while (i < a.length && compareEntries(a[i]!, y) < 0) i++;
      const x = a[i];
      if (x === undefined || compareEntries(x, y) !== 0 || !entryContains(x, y)) return false;
    }
    return true;
  }

  /** Structural equality (same entries, same reservations). */
  equals(other: Resources): boolean {
    if (this === other) return true;
    if (this.entries.length !== other.entries.length) return false;
    return this.entries.every((entry, i) => entryEquals(entry, other.entries[i]!));
  }

  /** The entries for which `keep` holds. */
  filter(keep: (entry: ResourceEntry) => boolean): Resources {
    const kept = this.entries.filter(keep);
    return kept.length === this.entries.length ? this : kept.length === 0 ? Resources.EMPTY : new Resources(kept);
  }

  /** Unreserved resources only. */
  unreserved(): Resources {
    return this.filter((e) => e.role === UNRESERVED_ROLE);
  }

  /** Reserved resources; with `role`, only those reserved for exactly that role. */
  reserved(role?: string): Resources {
    return role === undefined ? this.filter((e) => e.role !== UNRESERVED_ROLE) : this.filter((e) => e.role === role);
  }

  /**
   * What a framework in `role` may be offered: unreserved resources plus those reserved for `role`
   * or any of its ancestors (a reservation for `eng` serves `eng/web`).
   */
  allocatableTo(role: string): Resources {
    // The allocator asks this for every (agent, role) it visits; most agents are unreserved.
    let allUnreserved = true;
    for (const e of this.entries) {
      if (e.role !== UNRESERVED_ROLE) {
        allUnreserved = false;
        break;
      }
    }
    if (allUnreserved) return this;
    return this.filter((e) => e.role === UNRESERVED_ROLE || isSelfOrAncestor(e.role, role));
  }

  /** The same resources with every reservation dropped (all become unreserved). */
  flatten(): Resources {
    if (this.entries.every((e) => e.role === UNRESERVED_ROLE)) return this;
    return Resources.of(this.entries.map((e) => ({ ...e, role: UNRESERVED_ROLE })));
  }

  /** Total quantity of scalar `name` over all reservations, as a decimal number. */
  scalar(name: string): number {
    return fromMillis(this.scalarMillis(name));
  }

  /** Total quantity of scalar `name` over all reservations, in thousandths. */
  scalarMillis(name: string): number {
    let millis = 0;
    for (const e of this.entries) if (e.kind === "scalar" && e.name === name) millis += e.millis;
    return millis;
  }

  /** Scalar totals by name, reservations summed, in thousandths. */
  scalarQuantities(): ScalarQuantities {
    return new Map(this.quantities());
  }

  /** Like {@link scalarQuantities} but shared and read-only: computed once per value. */
  quantities(): ReadonlyMap<string, number> {
    if (this.quantitiesCache === undefined) {
      const out: ScalarQuantities = new Map();
      for (const e of this.entries) if (e.kind === "scalar") out.set(e.name, (out.get(e.name) ?? 0) + e.millis);
      this.quantitiesCache = out;
    }
    return this.quantitiesCache;
  }

  /** Scalar totals of the unreserved part, shared and read-only. */
  unreservedQuantities(): ReadonlyMap<string, number> {
    if (this.unreservedQuantitiesCache === undefined) {
      const out: ScalarQuantities = new Map();
      for (const e of this.entries) if (e.kind === "scalar" && e.role === UNRESERVED_ROLE) out.set(e.name, (out.get(e.name) ?? 0) + e.millis);
      this.unreservedQuantitiesCache = out;
    }
    return this.unreservedQuantitiesCache;
  }

  /**
   * The same bag with each scalar's quantity replaced by `millisOf(entry)`, which must not exceed
   * the entry's own (so the result stays normalised); entries brought to 0 are dropped.
   */
  shrinkScalars(millisOf: (entry: ScalarEntry) => number): Resources {
    let changed = false;
    const out: ResourceEntry[] = [];
    for (const e of this.entries) {
      if (e.kind !== "scalar") {
        out.push(e);
        continue;
      }
      const millis = millisOf(e);
      if (!(Number.isSafeInteger(millis) && millis >= 0 && millis <= e.millis)) {
        throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `shrinkScalars: ${e.name} must shrink to an integer in [0, ${e.millis}], got ${millis}`);
      }
      if (millis === e.millis) {
        out.push(e);
        continue;
      }
      changed = true;
      if (millis > 0) out.push({ kind: "scalar", name: e.name, role: e.role, millis });
    }
    if (!changed) return this;
    return out.length === 0 ? Resources.EMPTY : new Resources(out);
  }

  /** Scalar totals by name as decimal numbers, e.g. `{cpus: 2, mem: 1024}` (for JSON endpoints). */
  scalarSummary(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, millis] of this.scalarQuantities()) out[name] = fromMillis(millis);
    return out;
  }

  /** The ranges of `name` over all reservations, e.g. the ports of an offer. */
  ranges(name: string): Range[] {
    const all: Range[] = [];
    for (const e of this.entries) if (e.kind === "ranges" && e.name === name) all.push(...e.ranges);
    return normaliseRanges(all, name, true);
  }

  /** Number of integers in the ranges of `name` (e.g. how many ports). */
  rangesSize(name: string): number {
    return rangesSize(this.ranges(name));
  }

  /** The Mesos text form; `Resources.parse(r.toString())` equals `r`. */
  toString(): string {
    return this.entries
      .map((e) => `${e.name}${e.role === UNRESERVED_ROLE ? "" : `(${e.role})`}:${formatValue(e)}`)
      .join(";");
  }

  /** The JSON form (Mesos-style resource objects). */
  toJSON(): ResourceJson[] {
    return this.entries.map((e) => {
      const base = { name: e.name, ...(e.role === UNRESERVED_ROLE ? {} : { role: e.role }) };
      switch (e.kind) {
        case "scalar":
          return { ...base, type: "SCALAR", scalar: { value: fromMillis(e.millis) } };
        case "ranges":
          return { ...base, type: "RANGES", ranges: { range: e.ranges.map((r) => ({ begin: r.begin, end: r.end })) } };
        case "set":
          return { ...base, type: "SET", set: { item: [...e.items] } };
      }
    });
  }
}

/** Validates an entry built outside this module and brings it into normal form. */
function checkedEntry(entry: ResourceEntry): ResourceEntry {
  checkName(entry.name, entry.name);
  checkRole(entry.role, entry.name);
  switch (entry.kind) {
    case "scalar":
      if (!Number.isSafeInteger(entry.millis) || entry.millis < 0) {
        throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `scalar '${entry.name}' must be a non-negative number of thousandths`, entry.name);
      }
      return entry;
    case "ranges":
      return { ...entry, ranges: normaliseRanges(entry.ranges, entry.name, false) };
    case "set":
      return { ...entry, items: normaliseSet(entry.items, entry.name) };
    default:
      throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `unknown resource kind in '${(entry as ResourceEntry).name}'`);
  }
}

function normaliseSet(items: readonly string[], token: string): string[] {
  const seen = new Set<string>();
  for (const item of items) {
    // Nor ';', which separates resources in the text form: such an item could not be printed.
    if (typeof item !== "string" || item.length === 0 || /[\s,;{}]/.test(item)) {
      throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `invalid set item '${String(item)}' in '${token}'`, token);
    }
    if (seen.has(item)) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `duplicate set item '${item}' in '${token}'`, token);
    seen.add(item);
  }
  return [...seen].sort();
}

// Whitespace around the name, the role and the colon is dropped, as Mesos trims them; inside a
// name or a role it is an error (Mesos would make it part of the name).
const TOKEN_PATTERN = /^([^:()\s]+)\s*(?:\(\s*([^()]*?)\s*\)\s*)?:(.*)$/s;
const NUMBER_PATTERN = /^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function parseToken(token: string): ResourceEntry {
  const match = TOKEN_PATTERN.exec(token);
  if (!match) {
    throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `cannot parse resource '${token}': expected name:value or name(role):value`, token);
  }
  const name = match[1]!;
  const role = match[2] === undefined ? UNRESERVED_ROLE : match[2];
  const value = match[3]!.trim();
  checkName(name, token);
  checkRole(role, token);
  if (value.startsWith("[")) {
    if (!value.endsWith("]")) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `unterminated ranges in '${token}'`, token);
    const body = value.slice(1, -1).trim();
    const ranges: Range[] = body === "" ? [] : body.split(",").map((part) => parseRange(part.trim(), token));
    return { kind: "ranges", name, role, ranges: normaliseRanges(ranges, token, false) };
  }
  if (value.startsWith("{")) {
    if (!value.endsWith("}")) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `unterminated set in '${token}'`, token);
    const body = value.slice(1, -1).trim();
    const items = body === "" ? [] : body.split(",").map((item) => item.trim());
    return { kind: "set", name, role, items: normaliseSet(items, token) };
  }
  if (value.startsWith("-")) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `negative quantity in '${token}'`, token);
  if (!NUMBER_PATTERN.test(value)) {
    throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `'${value}' is not a number, [ranges] or {set} in '${token}'`, token);
  }
  return { kind: "scalar", name, role, millis: toMillis(Number(value), token) };
}

function parseRange(part: string, token: string): Range {
  const match = /^(\d+)\s*(?:-\s*(\d+))?$/.exec(part);
  if (!match) throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `bad range '${part}' in '${token}': expected begin-end`, token);
  const begin = Number(match[1]);
  const end = match[2] === undefined ? begin : Number(match[2]);
  return { begin, end };
}

function parseJsonElement(element: unknown, index: number): ResourceEntry {
  const where = `resources[${index}]`;
  const fail = (rule: string): never => {
    throw new ResourceError("CORRAL_ERR_BAD_RESOURCES", `${where}: ${rule}`, where);
  };
  if (typeof element !== "object" || element === null) return fail("must be an object");
  const e = element as Record<string, unknown>;
  const name = e.name;
  if (typeof name !== "string") return fail("name must be a string");
  checkName(name, where);
  const role = e.role === undefined ? UNRESERVED_ROLE : e.role;
  if (typeof role !== "string") return fail("role must be a string");
  checkRole(role, where);
  const type = e.type ?? (e.scalar !== undefined ? "SCALAR" : e.ranges !== undefined ? "RANGES" : e.set !== undefined ? "SET" : undefined);
  switch (type) {
    case "SCALAR": {
      const scalar = e.scalar as { value?: unknown } | undefined;
      if (typeof scalar?.value !== "number") return fail("scalar.value must be a number");
      return { kind: "scalar", name, role, millis: toMillis(scalar.value, `${where}.scalar.value`) };
    }
    case "RANGES": {
      const range = (e.ranges as { range?: unknown } | undefined)?.range;
      if (!Array.isArray(range)) return fail("ranges.range must be an array");
      const ranges = range.map((r: unknown, i) => {
        const rr = r as { begin?: unknown; end?: unknown } | null;
        if (typeof rr?.begin !== "number" || typeof rr?.end !== "number") return fail(`ranges.range[${i}] needs numeric begin and end`);
        return { begin: rr.begin, end: rr.end };
      });
      return { kind: "ranges", name, role, ranges: normaliseRanges(ranges, where, false) };
    }
    case "SET": {
      const item = (e.set as { item?: unknown } | undefined)?.item;
      if (!Array.isArray(item)) return fail("set.item must be an array of strings");
      return { kind: "set", name, role, items: normaliseSet(item as string[], where) };
    }
    default:
      return fail("type must be SCALAR, RANGES or SET");
  }
}
