/**
 * Host port selection for one instance from one offer's `ports` ranges.
 *
 * Marathon's rule: with `requirePorts`, each declared port is the host port and must be in the
 * offer; without it, every host port is dynamic and a non-zero declared port is only the app's
 * service port (for load balancers), so it does not constrain the host. Dynamic ports are taken
 * lowest-first, or uniformly at random through an injected Rng (Marathon randomises to make
 * collisions between frameworks unlikely).
 */
import { Resources, type Range } from "../../sdk/resources.ts";
import type { Rng } from "../../sdk/rng.ts";
import { UNRESERVED_ROLE } from "../../sdk/roles.ts";

/** The resource name of host ports. */
export const PORTS_RESOURCE = "ports";

/** What an instance asks for: the port fields of a normalised app. */
export interface PortNeeds {
  readonly portDefinitions: ReadonlyArray<{ readonly port: number }>;
  /** @default false */
  readonly requirePorts?: boolean;
}

/** How to pick. */
export interface PortPickOptions {
  /**
   * Roles whose ports may be used (`*` for unreserved). Absent: every role in the offer (the offer
   * was already made to the framework's role).
   */
  readonly acceptedRoles?: readonly string[];
  /** Random dynamic ports from this generator; absent: lowest free ports first (reserved ranges before unreserved). */
  readonly rng?: Rng;
}

/** Chosen ports, or why the offer cannot serve. */
export type PortPick =
  | {
      readonly ok: true;
      /** Host port of each port definition, in order. */
      readonly hostPorts: number[];
      /** The ports as resources to put in the launch, with their reservation roles. */
      readonly resources: Resources;
    }
  | { readonly ok: false; readonly reason: string };

interface RoleRanges {
  role: string;
  ranges: Range[];
}

/** The offer's port ranges per usable role, reserved roles first (use what is set aside for us). */
function usableRanges(offer: Resources, acceptedRoles: readonly string[] | undefined): RoleRanges[] {
  const out: RoleRanges[] = [];
  for (const entry of offer.entries) {
    if (entry.kind !== "ranges" || entry.name !== PORTS_RESOURCE) continue;
    if (acceptedRoles !== undefined && !acceptedRoles.includes(entry.role)) continue;
    out.push({ role: entry.role, ranges: entry.ranges.map((r) => ({ begin: r.begin, end: r.end })) });
  }
  return out.sort((a, b) => Number(a.role === UNRESERVED_ROLE) - Number(b.role === UNRESERVED_ROLE) || (a.role < b.role ? -1 : a.role > b.role ? 1 : 0));
}

function size(ranges: readonly Range[]): number {
  let n = 0;
  for (const r of ranges) n += r.end - r.begin + 1;
  return n;
}

/** Removes one port from sorted disjoint ranges (splitting a range when needed). */
function removePort(ranges: Range[], port: number): void {
  const i = ranges.findIndex((r) => r.begin <= port && port <= r.end);
  if (i < 0) return;
  const r = ranges[i]!;
  const pieces: Range[] = [];
  if (r.begin < port) pieces.push({ begin: r.begin, end: port - 1 });
  if (port < r.end) pieces.push({ begin: port + 1, end: r.end });
  ranges.splice(i, 1, ...pieces);
}

/** The `k`-th free port (0-based) over all roles, in role order then port order. */
function nthPort(pool: readonly RoleRanges[], k: number): { role: string; port: number } {
  let left = k;
  for (const { role, ranges } of pool) {
    for (const r of ranges) {
      const n = r.end - r.begin + 1;
      if (left < n) return { role, port: r.begin + left };
      left -= n;
    }
  }
  throw new RangeError(`port index ${k} beyond the pool`);
}

function describeNeeds(fixed: number, dynamic: number): string {
  const parts = [...(fixed > 0 ? [`${fixed} fixed`] : []), ...(dynamic > 0 ? [`${dynamic} dynamic`] : [])];
  return parts.join(" and ");
}

/**
 * Picks host ports for one instance from an offer. Succeeds with the ports (in port-definition
 * order) and the exact `ports` resources to launch with, or explains what is missing.
 */
export function pickPorts(needs: PortNeeds, offer: Resources, options: PortPickOptions = {}): PortPick {
  const wanted = needs.portDefinitions.map((d) => (needs.requirePorts ? d.port : 0));
  const pool = usableRanges(offer, options.acceptedRoles);
  const chosen: Array<{ role: string; port: number } | undefined> = wanted.map(() => undefined);

  // Fixed ports first: they have no alternative, dynamic ones do.
  const fixedSeen = new Set<number>();
  for (const [i, port] of wanted.entries()) {
    if (port === 0) continue;
    if (fixedSeen.has(port)) return { ok: false, reason: `port ${port} is required twice` };
    fixedSeen.add(port);
    const owner = pool.find(({ ranges }) => ranges.some((r) => r.begin <= port && port <= r.end));
    if (owner === undefined) {
      const roles = options.acceptedRoles ? ` to roles ${options.acceptedRoles.join(", ")}` : "";
      return { ok: false, reason: `required port ${port} is not offered${roles}` };
    }
    removePort(owner.ranges, port);
    chosen[i] = { role: owner.role, port };
  }

  const dynamic = wanted.filter((p) => p === 0).length;
  const free = pool.reduce((n, { ranges }) => n + size(ranges), 0);
  if (free < dynamic) {
    return { ok: false, reason: `needs ${describeNeeds(fixedSeen.size, dynamic)} ports, the offer has ${free} free port${free === 1 ? "" : "s"} left for the dynamic ones` };
  }
  let remaining = free;
  for (const [i, port] of wanted.entries()) {
    if (port !== 0) continue;
    const pick = nthPort(pool, options.rng ? options.rng.int(remaining) : 0);
    removePort(pool.find((p) => p.role === pick.role)!.ranges, pick.port);
    remaining--;
    chosen[i] = pick;
  }

  let resources = Resources.empty();
  for (const c of chosen) resources = resources.add(Resources.ranges(PORTS_RESOURCE, [{ begin: c!.port, end: c!.port }], c!.role));
  return { ok: true, hostPorts: chosen.map((c) => c!.port), resources };
}
