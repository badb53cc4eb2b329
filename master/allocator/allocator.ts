/**
 * The hierarchical DRF allocator: the pure decision of which framework is offered which agent's
 * resources. It reads no clock, arms no timer and does no I/O: the caller passes `nowMs` where
 * time matters and an `Rng` for the agent shuffle, so the master and the simulator share it.
 *
 * Semantics follow Mesos's hierarchical allocator:
 * - offers are coarse-grained: the lowest-share framework of the lowest-share role is offered
 *   everything it may use on an agent; the sorters are updated after every allocation;
 * - reservations are offered only to their role and its descendants and count toward the
 *   reserving role's share whether allocated or not (toward the descendant's while allocated to
 *   one, so that siblings sharing a parent's reservation are fair to each other);
 * - quota is set per top-level role: guarantees are satisfied first (stage 1) and enough
 *   unreserved resources are held back from other roles to still satisfy them (headroom);
 *   limits are never exceeded (scalar offers are chopped to fit);
 * - declines install filters per (framework, role, agent); SUPPRESS and REVIVE per role;
 * - nothing smaller than the minimum allocatable resources is offered.
 *
 * A periodic run over "all agents" visits only the agents whose outcome may have changed since
 * a run last visited them (see {@link HierarchicalAllocator.allocate}): with thousands of agents
 * and nothing new, a run costs what changed, not the size of the cluster.
 */
import { Resources, SCALAR_SCALE, addQuantities, resourceNameProblem, toMillis, type ResourceEntry, type ScalarQuantities } from "../../sdk/resources.ts";
import { roleNameError, topLevelRole } from "../../sdk/roles.ts";
import { shuffleInPlace, type Rng } from "../../sdk/rng.ts";
import { TimedHeap } from "../../sdk/time-heap.ts";
import { DrfSorter, RandomSorter, type Sorter } from "./sorter.ts";

/** Stable error codes of the allocator. */
export type AllocatorErrorCode =
  | "CORRAL_ERR_UNKNOWN_AGENT"
  | "CORRAL_ERR_UNKNOWN_FRAMEWORK"
  | "CORRAL_ERR_DUPLICATE_AGENT"
  | "CORRAL_ERR_DUPLICATE_FRAMEWORK"
  | "CORRAL_ERR_NOT_ALLOCATED"
  | "CORRAL_ERR_BAD_ROLE"
  | "CORRAL_ERR_BAD_WEIGHT"
  | "CORRAL_ERR_BAD_QUOTA"
  | "CORRAL_ERR_BAD_RESOURCES"
  | "CORRAL_ERR_OVER_ALLOCATED";

/** A refused call. The allocator's state is unchanged when one is thrown. */
export class AllocatorError extends Error {
  constructor(
    readonly code: AllocatorErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "AllocatorError";
  }
}

/** Options of {@link createAllocator}. */
export interface AllocatorOptions {
  /** Source of the per-run agent shuffle (and of the random sorter's orders). */
  rng: Rng;
  /**
   * The master's allocation interval. A decline filter lasts at least this long, since a filter
   * shorter than the interval would expire before the next run could honour it.
   * @default 1000
   */
  allocationIntervalMs?: number;
  /**
   * Offers must hold at least one of these scalar quantity sets (decimal units), so that crumbs
   * are never offered.
   * @default [{ cpus: 0.01 }, { mem: 32 }]
   */
  minAllocatable?: Array<Record<string, number>>;
  /**
   * Role and framework order policy: weighted DRF, or a seeded random order for comparisons.
   * @default "drf"
   */
  sorter?: "drf" | "random";
  /**
   * Visit agents in a fresh random order every run (as Mesos does), so that no agent is always
   * offered first. Turn off for step-by-step studies where insertion order is wanted.
   * @default true
   */
  shuffleAgents?: boolean;
}

/** Resources already in use on an agent when it is added (tasks found on re-registration). */
export interface AgentUsage {
  frameworkId: string;
  role: string;
  resources: Resources;
}

/** What the allocator needs to know about an agent. */
export interface AgentSpec {
  /** Everything the agent has, reservations included. */
  total: Resources;
  /** Free-form attributes (rack, zone); carried for callers, not used in allocation. @default {} */
  attributes?: Record<string, string>;
  /** Resources already allocated on it. Frameworks named here must already be added. @default [] */
  used?: AgentUsage[];
  /** Whether it may be offered. @default true */
  active?: boolean;
}

/** What the allocator needs to know about a framework. */
export interface FrameworkSpec {
  /** The roles it subscribes with (at least one). */
  roles: string[];
  /** Whether it is connected and may be offered. @default true */
  active?: boolean;
  /** Roles it has suppressed offers for. @default [] */
  suppressedRoles?: string[];
}

/** Quota of one top-level role, in decimal units by scalar name (`{cpus: 4, mem: 8192}`). */
export interface QuotaConfig {
  /** Resources the role is guaranteed to get when it wants them. @default {} */
  guarantees?: Record<string, number>;
  /** Resources the role may never exceed (absent names are unlimited). @default {} */
  limits?: Record<string, number>;
}

/** One offer decided by an allocation run. */
export interface OfferPlan {
  frameworkId: string;
  /** The role the resources are allocated to. */
  role: string;
  agentId: string;
  resources: Resources;
}

/** A read-only view of one agent, for the master's `/state` and for checks. */
export interface AgentView {
  agentId: string;
  total: Resources;
  allocated: Resources;
  available: Resources;
  active: boolean;
  attributes: Readonly<Record<string, string>>;
  /** Allocated resources by framework id and role. */
  allocations: ReadonlyMap<string, ReadonlyMap<string, Resources>>;
}

/**
 * The offer stage 1 of this run made to `agent` for (`frameworkId`, `role`), if any: none in a run
 * of one stage (`mergeRun` unset) nor while stage 1 is still at this agent (its range is recorded
 * once the visit ends).
 */
function stageOneOffer(offers: OfferList, agent: AgentState, frameworkId: string, role: string): OfferPlan | undefined {
  if (agent.stageOneRun !== offers.mergeRun) return undefined;
  for (let i = agent.stageOneStart; i < agent.stageOneEnd; i++) {
    const offer = offers.list[i]!;
    if (offer.frameworkId === frameworkId && offer.role === role) return offer;
  }
  return undefined;
}

/**
 * Adds a decline filter to one (framework, role, agent)'s list: filters that ended or that the
 * new one covers and outlasts go, and the new one is not kept if one kept already does that to it.
 */
function addFilter(list: Filter[], added: Filter, nowMs: number): void {
  let kept = 0;
  let redundant = false;
  for (const filter of list) {
    if (nowMs >= filter.expiresAtMs) continue;
    if (added.expiresAtMs >= filter.expiresAtMs && added.resources.contains(filter.resources)) continue;
    if (filter.expiresAtMs >= added.expiresAtMs && filter.resources.contains(added.resources)) redundant = true;
    list[kept++] = filter;
  }
  list.length = kept;
  if (redundant) return;
  if (list.length >= MAX_FILTERS_PER_AGENT) {
    let first = 0;
    for (let i = 1; i < list.length; i++) if (list[i]!.expiresAtMs < list[first]!.expiresAtMs) first = i;
    list.splice(first, 1);
  }
  list.push(added);
}

/** The offers of one allocation run, in the order they were made. */
interface OfferList {
  readonly list: OfferPlan[];
  /** The run (see `AgentState.stageOneRun`); set when stage 1 ran, and stage 2 must merge into its offers. */
  readonly mergeRun: number | undefined;
}

interface Filter {
  resources: Resources;
  expiresAtMs: number;
}

/**
 * Most decline filters one framework keeps for one role on one agent. Each refuses what it covers
 * until it ends, as in Mesos; a new one replaces those it covers and outlasts, so more are kept
 * only when a framework declines different shapes with different durations. When full, the filter
 * that ends first goes: the framework may then be offered a little early, never too late.
 */
const MAX_FILTERS_PER_AGENT = 8;

interface AgentState {
  readonly id: string;
  total: Resources;
  allocated: Resources;
  available: Resources;
  active: boolean;
  attributes: Record<string, string>;
  readonly allocations: Map<string, Map<string, Resources>>;
  /**
   * Where stage 1 of an allocation run put this agent's offers: `offers.list[stageOneStart,
   * stageOneEnd)` of run `stageOneRun`. They are contiguous (made during one visit of the agent),
   * so stage 2 finds an offer to add to among these few, with no map of all the run's offers.
   */
  stageOneRun: number;
  stageOneStart: number;
  stageOneEnd: number;
}

interface FrameworkState {
  readonly id: string;
  roles: Set<string>;
  active: boolean;
  suppressed: Set<string>;
  /** role -> agent -> the decline filters that may not have ended (at most {@link MAX_FILTERS_PER_AGENT}). */
  readonly filters: Map<string, Map<string, Filter[]>>;
}

interface RoleState {
  readonly frameworks: Set<string>;
  /** Reservations for exactly this role over all agents (thousandths by name). */
  readonly reservations: ScalarQuantities;
  readonly frameworkSorter: Sorter;
  /** Frameworks holding allocations in this role, with the number of agents they hold them on. */
  readonly holders: Map<string, number>;
}

interface Quota {
  guarantees: ScalarQuantities;
  limits: ScalarQuantities;
}

const EMPTY_QUANTITIES: ReadonlyMap<string, number> = new Map();

/** Reservations of a bag, grouped by reserving role. */
function reservationsByRole(resources: Resources): Map<string, Resources> {
  const byRole = new Map<string, ResourceEntry[]>();
  for (const entry of resources.entries) {
    if (entry.role === "*") continue;
    const list = byRole.get(entry.role) ?? [];
    list.push(entry);
    byRole.set(entry.role, list);
  }
  return new Map([...byRole].map(([role, entries]) => [role, Resources.of(entries)]));
}

function validRole(role: string, allowStar = false): void {
  const problem = roleNameError(role, allowStar);
  if (problem !== null) throw new AllocatorError("CORRAL_ERR_BAD_ROLE", `invalid role '${role}': ${problem}`);
}

/** Largest quantity a quota or minimum may name: thousandths of it must stay an exact integer. */
export const MAX_QUOTA_QUANTITY = Math.floor(Number.MAX_SAFE_INTEGER / SCALAR_SCALE);

const SCALAR_QUOTA_RULE = "quota is set on scalar resources only";

/** `ports` is Mesos's ranges resource, which quota does not count. */
function portsQuotaProblem(name: string): string | undefined {
  return name === "ports" ? `${SCALAR_QUOTA_RULE}; 'ports' is a ranges resource` : undefined;
}

function quantitiesFromRecord(record: Record<string, number> | undefined, what: string, nameProblem: (name: string) => string | undefined = resourceNameProblem): ScalarQuantities {
  const out: ScalarQuantities = new Map();
  if (record === undefined) return out;
  if (typeof record !== "object" || record === null || Array.isArray(record)) {
    throw new AllocatorError("CORRAL_ERR_BAD_QUOTA", `${what} must be an object of resource name to quantity`);
  }
  for (const [name, value] of Object.entries(record)) {
    const invalidName = resourceNameProblem(name);
    if (invalidName !== undefined) throw new AllocatorError("CORRAL_ERR_BAD_QUOTA", `${what}: invalid resource name '${name}': ${invalidName}`);
    const problem = nameProblem(name);
    if (problem !== undefined) throw new AllocatorError("CORRAL_ERR_BAD_QUOTA", `${what}.${name}: ${problem}`);
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
      throw new AllocatorError("CORRAL_ERR_BAD_QUOTA", `${what}.${name} must be a finite number >= 0, got ${String(value)}`);
    }
    if (value > MAX_QUOTA_QUANTITY) throw new AllocatorError("CORRAL_ERR_BAD_QUOTA", `${what}.${name} must be at most ${MAX_QUOTA_QUANTITY}, got ${String(value)}`);
    out.set(name, toMillis(value, `${what}.${name}`));
  }
  return out;
}

/**
 * The allocator. Create with {@link createAllocator}. Every mutating method either applies fully
 * or throws an {@link AllocatorError} and changes nothing.
 */
export class HierarchicalAllocator {
  private readonly rng: Rng;
  private readonly allocationIntervalMs: number;
  private readonly minAllocatable: ScalarQuantities[];
  private readonly sorterKind: "drf" | "random";
  private readonly shuffleAgents: boolean;

  private readonly agents = new Map<string, AgentState>();
  private readonly frameworks = new Map<string, FrameworkState>();
  private readonly roles = new Map<string, RoleState>();
  private readonly roleSorter: Sorter;
  private readonly weights = new Map<string, number>();
  private readonly quotas = new Map<string, Quota>();

  /** Cluster totals by scalar name, reservations included (what shares are measured against). */
  private readonly totals: ScalarQuantities = new Map();
  private totalsChanged = false;
  /** Allocated scalars (offered or used) over all agents, reservations included. */
  private readonly allocatedTotals: ScalarQuantities = new Map();
  /** The same per framework (frameworks holding nothing have no entry). */
  private readonly allocatedByFramework = new Map<string, ScalarQuantities>();
  /** Per top-level role: unreserved allocations plus reservations in its subtree. */
  private readonly consumption = new Map<string, ScalarQuantities>();
  /** Unallocated unreserved scalars on active agents: the headroom that can be handed out. */
  private readonly freeUnreserved: ScalarQuantities = new Map();
  /** Per quota role: guarantee not yet met. Their sum is the headroom that must be kept. */
  private readonly unsatisfied = new Map<string, ScalarQuantities>();
  private readonly requiredHeadroom: ScalarQuantities = new Map();
  /** Per role, the stamp of the last (agent, stage) walk that went through it. */
  private readonly roleMarks = new Map<string, number>();
  /** Top-level role of each known role, computed once (asked for on every allocation walk). */
  private readonly topRoles = new Map<string, string>();
  private markCounter = 0;
  /** Two-stage allocation runs so far (see `AgentState.stageOneRun`). */
  private allocationRuns = 0;
  /**
   * Agents a run must visit: those changed since a run last visited them, or "all". An agent a
   * run left with nothing to offer has nothing to offer until its own resources change, one of
   * its decline filters ends, or something that is no single agent's business changes (a
   * framework joins, activates or revives, roles, weights, quota) — which makes it "all". With a
   * quota set, every allocation change makes it "all" too: headroom and limits couple the agents.
   * Narrowing a run's choices (SUPPRESS, a framework or agent going inactive) cannot create an
   * offer, so it changes nothing here.
   */
  private stale: Set<string> | "all" = "all";
  /** Ends of decline filters, each with its agent (stale once its filter ended). */
  private readonly filterEnds = new TimedHeap<{ timeMs: number; seq: number; agentId: string }>();
  private filterEndSeq = 0;
  private candidatesOfLastRun = 0;
  /** See {@link HierarchicalAllocator.changeCount}. */
  private changes = 0;
  /** See {@link HierarchicalAllocator.watchAgents}. */
  private readonly agentWatchers: Array<(agentId: string) => void> = [];

  constructor(options: AllocatorOptions) {
    this.rng = options.rng;
    this.allocationIntervalMs = options.allocationIntervalMs ?? 1000;
    if (!(this.allocationIntervalMs >= 0)) throw new AllocatorError("CORRAL_ERR_BAD_RESOURCES", "allocationIntervalMs must be >= 0");
    this.minAllocatable = (options.minAllocatable ?? [{ cpus: 0.01 }, { mem: 32 }]).map((set, i) => quantitiesFromRecord(set, `minAllocatable[${i}]`));
    this.sorterKind = options.sorter ?? "drf";
    this.shuffleAgents = options.shuffleAgents ?? true;
    this.roleSorter = this.newSorter(true);
  }

  // ---- agents ---------------------------------------------------------------------------------

  /** Adds an agent with its total resources and what is already in use on it. */
  addAgent(agentId: string, spec: AgentSpec): void {
    this.changes++;
    if (this.agents.has(agentId)) throw new AllocatorError("CORRAL_ERR_DUPLICATE_AGENT", `agent '${agentId}' is already added`);
    const used = spec.used ?? [];
    // Each usage is taken from what is left in turn: a sum would merge two usages' overlapping
    // port ranges, pass, and the second would then fail half-way through adding the agent.
    let left = spec.total;
    for (const [i, usage] of used.entries()) {
      const framework = this.frameworks.get(usage.frameworkId);
      if (!framework) throw new AllocatorError("CORRAL_ERR_UNKNOWN_FRAMEWORK", `agent '${agentId}' reports usage by unknown framework '${usage.frameworkId}'`);
      validRole(usage.role, true);
      const rest = left.trySubtract(usage.resources);
      if (rest === null) {
        const than = i === 0 ? `its total ${spec.total.toString()}` : `${left.toString()}, what the usages before it leave of its total ${spec.total.toString()}`;
        throw new AllocatorError("CORRAL_ERR_OVER_ALLOCATED", `agent '${agentId}': used[${i}] (${usage.resources.toString()}) is more than ${than}`);
      }
      left = rest;
    }
    for (const role of reservationsByRole(spec.total).keys()) validRole(role);

    const agent: AgentState = {
      id: agentId,
      total: spec.total,
      allocated: Resources.empty(),
      available: spec.total,
      active: false,
      attributes: { ...(spec.attributes ?? {}) },
      allocations: new Map(),
      stageOneRun: 0,
      stageOneStart: 0,
      stageOneEnd: 0,
    };
    this.agents.set(agentId, agent);
    this.addTotal(spec.total, 1);
    for (const usage of used) {
      // Usage of a framework that does not hold the role yet (it re-subscribes later) still counts.
      this.trackRole(usage.role);
      this.assign(agent, usage.frameworkId, usage.role, usage.resources, false);
    }
    if (spec.active ?? true) this.activateAgent(agentId);
    this.notifyWatchers(agentId);
  }

  /** Removes an agent; whatever was allocated on it is forgotten (its tasks are gone). */
  removeAgent(agentId: string): void {
    this.changes++;
    const agent = this.agent(agentId);
    this.deactivateAgent(agentId);
    for (const [frameworkId, byRole] of [...agent.allocations]) {
      for (const [role, resources] of [...byRole]) this.release(agent, frameworkId, role, resources);
    }
    this.addTotal(agent.total, -1);
    this.agents.delete(agentId);
    for (const framework of this.frameworks.values()) for (const byAgent of framework.filters.values()) byAgent.delete(agentId);
    this.notifyWatchers(agentId);
  }

  /** Replaces an agent's total (for example after an operator changed its reservations). */
  updateAgent(agentId: string, total: Resources): void {
    this.changes++;
    const agent = this.agent(agentId);
    if (!total.contains(agent.allocated)) {
      throw new AllocatorError("CORRAL_ERR_OVER_ALLOCATED", `agent '${agentId}': new total ${total.toString()} does not cover allocated ${agent.allocated.toString()}`);
    }
    for (const role of reservationsByRole(total).keys()) validRole(role);
    const wasActive = agent.active;
    if (wasActive) this.deactivateAgent(agentId);
    // Reservations allocated to subroles go back to their role while the totals change under them.
    for (const byRole of agent.allocations.values()) for (const [role, resources] of byRole) this.chargeAncestorReservations(role, resources, -1);
    this.addTotal(agent.total, -1);
    agent.total = total;
    agent.available = total.subtract(agent.allocated);
    this.changed(agentId);
    this.addTotal(total, 1);
    for (const byRole of agent.allocations.values()) for (const [role, resources] of byRole) this.chargeAncestorReservations(role, resources, 1);
    if (wasActive) this.activateAgent(agentId);
  }

  /** Lets an agent be offered again. */
  activateAgent(agentId: string): void {
    this.changes++;
    const agent = this.agent(agentId);
    if (agent.active) return;
    agent.active = true;
    this.changed(agentId);
    addQuantities(this.freeUnreserved, agent.available.unreservedQuantities(), 1);
  }

  /** Stops offering an agent (it is unreachable or draining); its allocations stay. */
  deactivateAgent(agentId: string): void {
    this.changes++;
    const agent = this.agent(agentId);
    if (!agent.active) return;
    agent.active = false;
    addQuantities(this.freeUnreserved, agent.available.unreservedQuantities(), -1);
    this.notifyWatchers(agentId);
  }

  // ---- frameworks -----------------------------------------------------------------------------

  /** Adds a framework with its roles. */
  addFramework(frameworkId: string, spec: FrameworkSpec): void {
    this.changes++;
    if (this.frameworks.has(frameworkId)) throw new AllocatorError("CORRAL_ERR_DUPLICATE_FRAMEWORK", `framework '${frameworkId}' is already added`);
    const roles = this.checkRoles(spec.roles, spec.suppressedRoles);
    const framework: FrameworkState = {
      id: frameworkId,
      roles: new Set(),
      active: false,
      suppressed: new Set(spec.suppressedRoles ?? []),
      filters: new Map(),
    };
    this.frameworks.set(frameworkId, framework);
    this.stale = "all";
    for (const role of roles) this.joinRole(framework, role);
    if (spec.active ?? true) this.activateFramework(frameworkId);
  }

  /**
   * Changes a framework's roles and suppressed roles (a re-subscription with new info). Roles it
   * no longer suppresses are revived: their decline filters go, as with {@link reviveRoles}.
   */
  updateFramework(frameworkId: string, spec: FrameworkSpec): void {
    this.changes++;
    const framework = this.framework(frameworkId);
    const roles = this.checkRoles(spec.roles, spec.suppressedRoles);
    this.stale = "all";
    for (const role of [...framework.roles]) if (!roles.includes(role)) this.leaveRole(framework, role);
    for (const role of roles) if (!framework.roles.has(role)) this.joinRole(framework, role);
    const suppressed = new Set(spec.suppressedRoles ?? []);
    // A role the update unsuppresses is revived, filters cleared, as Mesos's updateFramework does.
    for (const role of framework.suppressed) if (!suppressed.has(role)) framework.filters.delete(role);
    framework.suppressed = suppressed;
    if (spec.active !== undefined) {
      if (spec.active) this.activateFramework(frameworkId);
      else this.deactivateFramework(frameworkId);
    }
    this.refreshActivity(framework);
  }

  /** Removes a framework, releasing everything still allocated to it. */
  removeFramework(frameworkId: string): void {
    this.changes++;
    const framework = this.framework(frameworkId);
    for (const agent of this.agents.values()) {
      const byRole = agent.allocations.get(frameworkId);
      if (!byRole) continue;
      for (const [role, resources] of [...byRole]) this.release(agent, frameworkId, role, resources);
    }
    framework.active = false;
    for (const role of [...framework.roles]) this.leaveRole(framework, role);
    this.frameworks.delete(frameworkId);
  }

  /** Lets a framework be offered again (it reconnected). */
  activateFramework(frameworkId: string): void {
    this.changes++;
    const framework = this.framework(frameworkId);
    framework.active = true;
    this.stale = "all";
    this.refreshActivity(framework);
  }

  /**
   * Stops offering a framework (it disconnected); its allocations stay. Its decline filters go, as
   * in Mesos: the scheduler instance that connects next has declined nothing. No agent becomes
   * stale here, since an inactive framework is offered nothing; activation makes them all stale.
   */
  deactivateFramework(frameworkId: string): void {
    this.changes++;
    const framework = this.framework(frameworkId);
    framework.active = false;
    framework.filters.clear();
    this.refreshActivity(framework);
  }

  /** SUPPRESS: no offers for the given roles (all of the framework's roles when omitted). */
  suppressRoles(frameworkId: string, roles?: string[]): void {
    this.changes++;
    const framework = this.framework(frameworkId);
    const target = this.rolesOf(framework, roles);
    for (const role of target) framework.suppressed.add(role);
    this.refreshActivity(framework);
  }

  /** REVIVE: offers again for the given roles (all when omitted), with their decline filters cleared. */
  reviveRoles(frameworkId: string, roles?: string[]): void {
    this.changes++;
    const framework = this.framework(frameworkId);
    const target = this.rolesOf(framework, roles);
    for (const role of target) {
      framework.suppressed.delete(role);
      framework.filters.delete(role);
    }
    this.stale = "all";
    this.refreshActivity(framework);
  }

  // ---- roles: weights and quota ---------------------------------------------------------------

  /** Sets a role's weight (> 0). A role with weight 2 gets twice the share of a sibling with 1. */
  setWeight(role: string, weight: number): void {
    this.changes++;
    validRole(role);
    if (typeof weight !== "number" || !Number.isFinite(weight) || weight <= 0) {
      throw new AllocatorError("CORRAL_ERR_BAD_WEIGHT", `weight of role '${role}' must be a finite number > 0, got ${String(weight)}`);
    }
    this.weights.set(role, weight);
    this.roleSorter.setWeight(role, weight);
    this.stale = "all";
  }

  /** The configured weights (roles without an entry weigh 1). */
  getWeights(): ReadonlyMap<string, number> {
    return new Map(this.weights);
  }

  /**
   * Sets (or with `null`, removes) the quota of a top-level role.
   * @throws AllocatorError when the role is not top-level, a quantity is negative or a guarantee
   * exceeds its limit
   */
  setQuota(role: string, quota: QuotaConfig | null): void {
    this.changes++;
    validRole(role);
    if (role.includes("/")) throw new AllocatorError("CORRAL_ERR_BAD_QUOTA", `quota is set per top-level role; '${role}' is nested`);
    if (quota === null) {
      this.stale = "all";
      this.quotas.delete(role);
      this.recomputeUnsatisfied(role);
      return;
    }
    if (typeof quota !== "object" || Array.isArray(quota)) throw new AllocatorError("CORRAL_ERR_BAD_QUOTA", "quota must be an object with guarantees and/or limits");
    const guarantees = quantitiesFromRecord(quota.guarantees, "guarantees", portsQuotaProblem);
    const limits = quantitiesFromRecord(quota.limits, "limits", portsQuotaProblem);
    for (const [name, millis] of guarantees) {
      const limit = limits.get(name);
      if (limit !== undefined && millis > limit) {
        throw new AllocatorError("CORRAL_ERR_BAD_QUOTA", `guarantees.${name} (${millis / 1000}) exceeds limits.${name} (${limit / 1000})`);
      }
    }
    this.stale = "all";
    this.quotas.set(role, { guarantees, limits });
    this.recomputeUnsatisfied(role);
  }

  /**
   * Why a quota cannot name the resource `name` now, or `undefined` when it can. Quota counts
   * scalars (as in Mesos): not `ports`, nor a name some agent has as ranges or a set. `setQuota`
   * itself refuses only `ports`: what agents have changes, and a quota accepted before must stay
   * settable (a refused update puts the previous quotas back); the operator API asks this first.
   */
  quotaResourceProblem(name: string): string | undefined {
    const ports = portsQuotaProblem(name);
    if (ports !== undefined) return ports;
    for (const agent of this.agents.values()) {
      const entry = agent.total.entries.find((e) => e.name === name && e.kind !== "scalar");
      if (entry) return `${SCALAR_QUOTA_RULE}; agent '${agent.id}' has '${name}' as ${entry.kind === "set" ? "a set" : "ranges"}`;
    }
    return undefined;
  }

  /** The configured quota of every role, in decimal units. */
  getQuotas(): Map<string, { guarantees: Record<string, number>; limits: Record<string, number> }> {
    const toRecord = (q: ScalarQuantities) => Object.fromEntries([...q].map(([n, m]) => [n, m / 1000]));
    return new Map([...this.quotas].map(([role, q]) => [role, { guarantees: toRecord(q.guarantees), limits: toRecord(q.limits) }]));
  }

  /** What a top-level role consumes toward its quota (unreserved allocations plus reservations). */
  quotaConsumption(role: string): Record<string, number> {
    return Object.fromEntries([...(this.consumption.get(role) ?? [])].map(([n, m]) => [n, m / 1000]));
  }

  // ---- resources back ------------------------------------------------------------------------

  /**
   * Gives resources back: an offer declined or rescinded, a task ended. With `refuseSeconds > 0`
   * a filter stops these resources on this agent from being offered again to this framework and
   * role for `max(refuseSeconds, allocation interval)`.
   */
  recoverResources(frameworkId: string, agentId: string, role: string, resources: Resources, filter?: { refuseSeconds: number; nowMs: number }): void {
    this.changes++;
    const framework = this.framework(frameworkId);
    const agent = this.agent(agentId);
    const held = agent.allocations.get(frameworkId)?.get(role);
    if (!held || !held.contains(resources)) {
      throw new AllocatorError(
        "CORRAL_ERR_NOT_ALLOCATED",
        `framework '${frameworkId}' holds ${held?.toString() || "nothing"} for role '${role}' on agent '${agentId}', not ${resources.toString()}`,
      );
    }
    if (filter !== undefined && !(Number.isFinite(filter.refuseSeconds) && Number.isFinite(filter.nowMs))) {
      throw new AllocatorError("CORRAL_ERR_BAD_RESOURCES", "filter needs finite refuseSeconds and nowMs");
    }
    this.release(agent, frameworkId, role, resources);
    if (filter && filter.refuseSeconds > 0 && !resources.isEmpty()) {
      const durationMs = Math.max(filter.refuseSeconds * 1000, this.allocationIntervalMs);
      let byAgent = framework.filters.get(role);
      if (!byAgent) framework.filters.set(role, (byAgent = new Map()));
      const list = byAgent.get(agentId);
      const added: Filter = { resources, expiresAtMs: filter.nowMs + durationMs };
      if (list === undefined) byAgent.set(agentId, [added]);
      else addFilter(list, added, filter.nowMs);
      this.filterEnds.push({ timeMs: filter.nowMs + durationMs, seq: this.filterEndSeq++, agentId });
    }
  }

  // ---- the allocation run ---------------------------------------------------------------------

  /**
   * One allocation run over all agents, or only over `agentIds` (the incremental case: an agent
   * whose resources were just recovered). Returns the offers to make; the allocator already counts
   * them as allocated, so the caller must recover them on decline, rescind or expiry.
   *
   * A run over all agents offers what a visit of every active agent would, but visits only those
   * that may have something new to offer (see {@link HierarchicalAllocator.stale}).
   */
  allocate(nowMs: number, agentIds?: Iterable<string>): OfferPlan[] {
    this.changes++;
    this.pushTotals();
    for (let end = this.filterEnds.peek(); end !== undefined && end.timeMs <= nowMs; end = this.filterEnds.peek()) {
      this.filterEnds.pop();
      this.changed(end.agentId);
    }
    const candidates: AgentState[] = [];
    const stale = this.stale;
    if (agentIds === undefined) {
      const ids = stale === "all" ? this.agents.keys() : stale;
      for (const id of ids) {
        const agent = this.agents.get(id);
        if (agent?.active) candidates.push(agent);
      }
      // Reset before the run: what it allocates makes those agents stale again.
      this.stale = new Set();
    } else {
      for (const id of agentIds) {
        const agent = this.agents.get(id);
        if (agent?.active) candidates.push(agent);
        if (stale !== "all") stale.delete(id);
      }
    }
    this.candidatesOfLastRun = candidates.length;
    if (this.shuffleAgents) shuffleInPlace(candidates, this.rng);

    const twoStages = this.unsatisfied.size > 0;
    const offers: OfferList = { list: [], mergeRun: twoStages ? ++this.allocationRuns : undefined };
    if (twoStages) this.runStage(candidates, offers, nowMs, true);
    this.runStage(candidates, offers, nowMs, false);
    return offers.list;
  }

  /**
   * Stage 1 (`guaranteesOnly`) offers quota roles what they lack of their guarantees; stage 2
   * offers everyone the rest, holding back the headroom stage 1 still needs.
   */
  private runStage(candidates: AgentState[], offers: OfferList, nowMs: number, guaranteesOnly: boolean): void {
    // One visitor per stage (not per agent): the walk reads the agent in hand from `walk`.
    const walk = { agent: candidates[0]!, mark: 0, role: "", frameworkId: "", resources: Resources.empty(), found: false };
    const frameworkVisitor = (frameworkId: string): boolean => {
      const framework = this.frameworks.get(frameworkId)!;
      const role = walk.role;
      if (!framework.active || framework.suppressed.has(role) || !framework.roles.has(role)) return true;
      if (this.isFiltered(framework, role, walk.agent.id, walk.resources, nowMs)) return true;
      walk.frameworkId = frameworkId;
      walk.found = true;
      return false;
    };
    const roleVisitor = (role: string): boolean => {
      // Roles this agent has been through in this stage carry its mark.
      if (this.roleMarks.get(role) === walk.mark) return true;
      this.roleMarks.set(role, walk.mark);
      if (guaranteesOnly && !this.unsatisfied.has(this.topOf(role))) return true;
      const allocatable = walk.agent.available.allocatableTo(role);
      if (!this.isAllocatable(allocatable)) return true;
      const toOffer = this.shapeOffer(role, allocatable, guaranteesOnly);
      if (toOffer !== allocatable && !this.isAllocatable(toOffer)) return true;
      const state = this.roles.get(role);
      if (!state) return true;
      walk.role = role;
      walk.resources = toOffer;
      state.frameworkSorter.visit(frameworkVisitor);
      return !walk.found;
    };
    for (const agent of candidates) {
      if (guaranteesOnly && this.unsatisfied.size === 0) break; // every guarantee is met
      if (!this.isAllocatable(agent.available)) continue;
      walk.agent = agent;
      walk.mark = ++this.markCounter;
      // Roles are walked in share order. An allocation reorders the sorter, so after one the
      // walk restarts from the lowest share, skipping roles this agent has already been through.
      const firstOffer = offers.list.length;
      for (;;) {
        walk.found = false;
        this.roleSorter.visit(roleVisitor);
        if (!walk.found) break;
        const { role, frameworkId, resources } = walk;
        this.assign(agent, frameworkId, role, resources, true);
        // Stage 2 may add to an offer stage 1 made (Mesos makes them one offer). Within a stage
        // each role comes at most once per agent, so nothing else can be merged.
        const existing = stageOneOffer(offers, agent, frameworkId, role);
        if (existing) existing.resources = existing.resources.add(resources);
        else offers.list.push({ frameworkId, role, agentId: agent.id, resources });
        if (!this.isAllocatable(agent.available)) break;
      }
      if (guaranteesOnly && offers.list.length > firstOffer) {
        agent.stageOneRun = offers.mergeRun!;
        agent.stageOneStart = firstOffer;
        agent.stageOneEnd = offers.list.length;
      }
    }
  }

  /** Notes a change of one agent's resources (of every agent while a quota is set). */
  private changed(agentId: string): void {
    this.notifyWatchers(agentId);
    if (this.stale === "all") return;
    if (this.quotas.size > 0) this.stale = "all";
    else this.stale.add(agentId);
  }

  /** Whether any of the framework's filters for `role` on this agent covers `resources`; drops those that ended. */
  private isFiltered(framework: FrameworkState, role: string, agentId: string, resources: Resources, nowMs: number): boolean {
    const byAgent = framework.filters.get(role);
    const list = byAgent?.get(agentId);
    if (!list) return false;
    let filtered = false;
    let live = 0;
    for (const filter of list) {
      if (nowMs >= filter.expiresAtMs) continue;
      list[live++] = filter;
      // A filter refuses only what it covers: if more became free since the decline, offer it.
      if (!filtered && filter.resources.contains(resources)) filtered = true;
    }
    list.length = live;
    if (live === 0) byAgent!.delete(agentId);
    return filtered;
  }

  /**
   * Chops unreserved scalars to what quota limits and headroom allow for `role`. In the guarantee
   * stage the result is empty unless it holds some of what the role still lacks of its guarantees:
   * as in Mesos, a role is offered out of turn only to make progress toward them (memory alone
   * does nothing for a cpus guarantee, and goes by fair share in stage 2).
   */
  private shapeOffer(role: string, allocatable: Resources, guaranteesOnly: boolean): Resources {
    const top = this.topOf(role);
    const quota = this.quotas.get(top);
    if (!quota && this.requiredHeadroom.size === 0) return allocatable;
    const consumed = this.consumption.get(top);
    const unsatisfied = this.unsatisfied.get(top);
    let towardGuarantees = false;
    const shaped = allocatable.shrinkScalars((entry) => {
      if (entry.role !== "*") return entry.millis; // reservations are already the role's own
      let cap = entry.millis;
      const name = entry.name;
      const limit = quota?.limits.get(name);
      if (limit !== undefined) cap = Math.min(cap, Math.max(0, limit - (consumed?.get(name) ?? 0)));
      const ownNeed = unsatisfied?.get(name) ?? 0;
      if (guaranteesOnly && quota?.guarantees.has(name)) {
        const toward = Math.min(cap, ownNeed);
        if (toward > 0) towardGuarantees = true;
        return toward;
      }
      const required = this.requiredHeadroom.get(name) ?? 0;
      if (required > 0) {
        // Keep enough free for every unmet guarantee; what this role itself lacks may be used.
        const slack = (this.freeUnreserved.get(name) ?? 0) - required;
        cap = Math.min(cap, Math.max(0, slack + ownNeed));
      }
      return cap;
    });
    return guaranteesOnly && !towardGuarantees ? Resources.empty() : shaped;
  }

  private isAllocatable(resources: Resources): boolean {
    const entries = resources.entries;
    if (entries.length === 0) return false;
    // Runs for every (agent, role) of every run: scan the few entries rather than build a map.
    for (const minimum of this.minAllocatable) {
      let satisfied = true;
      for (const [name, millis] of minimum) {
        let have = 0;
        for (const e of entries) if (e.kind === "scalar" && e.name === name) have += e.millis;
        if (have < millis) {
          satisfied = false;
          break;
        }
      }
      if (satisfied) return true;
    }
    return false;
  }

  // ---- bookkeeping ----------------------------------------------------------------------------

  private assign(agent: AgentState, frameworkId: string, role: string, resources: Resources, countAllocation: boolean): void {
    let byRole = agent.allocations.get(frameworkId);
    if (!byRole) agent.allocations.set(frameworkId, (byRole = new Map()));
    const held = byRole.get(role);
    byRole.set(role, held ? held.add(resources) : resources);
    if (!held) {
      const holders = this.roles.get(role)!.holders;
      holders.set(frameworkId, (holders.get(frameworkId) ?? 0) + 1);
    }
    agent.allocated = agent.allocated.add(resources);
    agent.available = agent.available.subtract(resources);
    this.changed(agent.id);

    const quantities = resources.quantities();
    const unreserved = resources.unreservedQuantities();
    addQuantities(this.allocatedTotals, quantities, 1);
    let ofFramework = this.allocatedByFramework.get(frameworkId);
    if (!ofFramework) this.allocatedByFramework.set(frameworkId, (ofFramework = new Map()));
    addQuantities(ofFramework, quantities, 1);
    const frameworkSorter = this.frameworkSorterOf(role);
    if (!frameworkSorter.contains(frameworkId)) frameworkSorter.add(frameworkId); // usage found before it joined the role
    frameworkSorter.allocated(frameworkId, quantities, countAllocation);
    this.roleSorter.allocated(role, unreserved, countAllocation);
    this.chargeAncestorReservations(role, resources, 1);
    this.changeConsumption(this.topOf(role), unreserved, 1);
    if (agent.active) addQuantities(this.freeUnreserved, unreserved, -1);
  }

  private release(agent: AgentState, frameworkId: string, role: string, resources: Resources): void {
    const byRole = agent.allocations.get(frameworkId)!;
    const rest = byRole.get(role)!.subtract(resources);
    if (rest.isEmpty()) {
      byRole.delete(role);
      const holders = this.roles.get(role)!.holders;
      const count = holders.get(frameworkId)! - 1;
      if (count === 0) holders.delete(frameworkId);
      else holders.set(frameworkId, count);
    } else {
      byRole.set(role, rest);
    }
    if (byRole.size === 0) agent.allocations.delete(frameworkId);
    agent.allocated = agent.allocated.subtract(resources);
    agent.available = agent.available.add(resources);
    this.changed(agent.id);

    const quantities = resources.quantities();
    const unreserved = resources.unreservedQuantities();
    addQuantities(this.allocatedTotals, quantities, -1);
    const ofFramework = this.allocatedByFramework.get(frameworkId)!;
    addQuantities(ofFramework, quantities, -1);
    if (ofFramework.size === 0) this.allocatedByFramework.delete(frameworkId);
    this.frameworkSorterOf(role).unallocated(frameworkId, quantities);
    this.roleSorter.unallocated(role, unreserved);
    this.chargeAncestorReservations(role, resources, -1);
    this.changeConsumption(this.topOf(role), unreserved, -1);
    if (agent.active) addQuantities(this.freeUnreserved, unreserved, 1);
    const state = this.roles.get(role)!;
    if (!state.frameworks.has(frameworkId) && !state.holders.has(frameworkId)) state.frameworkSorter.remove(frameworkId);
    this.untrackRoleIfUnused(role);
  }

  /**
   * Moves, in the role sorter, the reservations of `role`'s ancestors within `resources` from the
   * reserving role to `role` (sign 1, when they are allocated to it) or back (-1). A reservation
   * counts toward its role's share whether allocated or not; allocated to a subrole it counts
   * toward that subrole, as Mesos's sorter charges a role what it is allocated, so that siblings
   * sharing a parent's reservation stay fair to each other. The parent's subtree share is the
   * same either way. Most offers hold no such reservation: one scan of their few entries.
   */
  private chargeAncestorReservations(role: string, resources: Resources, sign: 1 | -1): void {
    let byReserver: Map<string, ScalarQuantities> | undefined;
    for (const e of resources.entries) {
      if (e.kind !== "scalar" || e.role === "*" || e.role === role) continue;
      byReserver ??= new Map();
      let quantities = byReserver.get(e.role);
      if (!quantities) byReserver.set(e.role, (quantities = new Map()));
      quantities.set(e.name, (quantities.get(e.name) ?? 0) + e.millis);
    }
    if (byReserver === undefined) return;
    for (const [reserver, quantities] of byReserver) {
      const [from, to] = sign > 0 ? [reserver, role] : [role, reserver];
      this.roleSorter.unallocated(from, quantities);
      this.roleSorter.allocated(to, quantities, false);
    }
  }

  /** Adds (or removes) an agent's total to cluster totals and its reservations to their roles. */
  private addTotal(total: Resources, sign: 1 | -1): void {
    addQuantities(this.totals, total.scalarQuantities(), sign);
    this.totalsChanged = true;
    for (const [role, reserved] of reservationsByRole(total)) {
      const quantities = reserved.scalarQuantities();
      this.trackRole(role);
      const state = this.roles.get(role)!;
      addQuantities(state.reservations, quantities, sign);
      if (sign > 0) this.roleSorter.allocated(role, quantities, false);
      else this.roleSorter.unallocated(role, quantities);
      this.changeConsumption(topLevelRole(role), quantities, sign);
      if (sign < 0) this.untrackRoleIfUnused(role);
    }
  }

  private pushTotals(): void {
    if (!this.totalsChanged) return;
    const totals = new Map(this.totals);
    this.roleSorter.setTotal(totals);
    for (const state of this.roles.values()) state.frameworkSorter.setTotal(totals);
    this.totalsChanged = false;
  }

  private changeConsumption(top: string, delta: ReadonlyMap<string, number>, sign: 1 | -1): void {
    if (delta.size === 0) return;
    let consumed = this.consumption.get(top);
    if (!consumed) this.consumption.set(top, (consumed = new Map()));
    addQuantities(consumed, delta, sign);
    if (consumed.size === 0) this.consumption.delete(top);
    if (this.quotas.has(top)) this.recomputeUnsatisfied(top);
  }

  /**
   * Refreshes one role's unmet guarantee and the total headroom that must be held back. Runs on
   * every allocation to a quota role, so it updates both in place rather than rebuilding them.
   */
  private recomputeUnsatisfied(top: string): void {
    const quota = this.quotas.get(top);
    let need = this.unsatisfied.get(top);
    if (!quota) {
      if (need) addQuantities(this.requiredHeadroom, need, -1);
      this.unsatisfied.delete(top);
      return;
    }
    const consumed = this.consumption.get(top);
    for (const [name, guarantee] of quota.guarantees) {
      const missing = Math.max(0, guarantee - (consumed?.get(name) ?? 0));
      const before = need?.get(name) ?? 0;
      if (missing === before) continue;
      const required = (this.requiredHeadroom.get(name) ?? 0) + missing - before;
      if (required === 0) this.requiredHeadroom.delete(name);
      else this.requiredHeadroom.set(name, required);
      if (missing > 0) (need ??= new Map()).set(name, missing);
      else need?.delete(name);
    }
    // Names no longer guaranteed (the quota changed) stop counting.
    if (need) {
      for (const [name, missing] of need) {
        if (quota.guarantees.has(name)) continue;
        const required = (this.requiredHeadroom.get(name) ?? 0) - missing;
        if (required === 0) this.requiredHeadroom.delete(name);
        else this.requiredHeadroom.set(name, required);
        need.delete(name);
      }
    }
    if (need && need.size > 0) this.unsatisfied.set(top, need);
    else this.unsatisfied.delete(top);
  }

  private newSorter(hierarchical: boolean): Sorter {
    return this.sorterKind === "random" ? new RandomSorter(this.rng.fork(hierarchical ? "roles" : "frameworks"), { hierarchical }) : new DrfSorter({ hierarchical });
  }

  private topOf(role: string): string {
    let top = this.topRoles.get(role);
    if (top === undefined) {
      top = topLevelRole(role);
      this.topRoles.set(role, top);
    }
    return top;
  }

  private trackRole(role: string): void {
    if (this.roles.has(role)) return;
    const frameworkSorter = this.newSorter(false);
    frameworkSorter.setTotal(new Map(this.totals));
    this.roles.set(role, { frameworks: new Set(), reservations: new Map(), frameworkSorter, holders: new Map() });
    this.roleSorter.add(role);
  }

  /** Forgets a role once nothing refers to it: no framework, reservation or allocation. */
  private untrackRoleIfUnused(role: string): void {
    const state = this.roles.get(role);
    if (!state || state.frameworks.size > 0 || state.reservations.size > 0 || state.holders.size > 0) return;
    this.roleSorter.remove(role);
    this.roles.delete(role);
    this.roleMarks.delete(role);
    this.topRoles.delete(role);
  }

  private frameworkSorterOf(role: string): Sorter {
    this.trackRole(role);
    return this.roles.get(role)!.frameworkSorter;
  }

  private joinRole(framework: FrameworkState, role: string): void {
    this.trackRole(role);
    const state = this.roles.get(role)!;
    state.frameworks.add(framework.id);
    state.frameworkSorter.add(framework.id);
    framework.roles.add(role);
    this.refreshActivity(framework);
  }

  private leaveRole(framework: FrameworkState, role: string): void {
    const state = this.roles.get(role)!;
    state.frameworks.delete(framework.id);
    // Keep the framework in the role's sorter while it still holds resources in that role.
    const holds = state.holders.has(framework.id);
    if (!holds) state.frameworkSorter.remove(framework.id);
    else state.frameworkSorter.deactivate(framework.id);
    framework.roles.delete(role);
    framework.suppressed.delete(role);
    framework.filters.delete(role);
    this.refreshRoleActivity(role);
    this.untrackRoleIfUnused(role);
  }

  /** Syncs sorter activity with the framework's flags: who may appear in a visit. */
  private refreshActivity(framework: FrameworkState): void {
    for (const role of framework.roles) {
      const sorter = this.roles.get(role)!.frameworkSorter;
      if (framework.active && !framework.suppressed.has(role)) sorter.activate(framework.id);
      else sorter.deactivate(framework.id);
      this.refreshRoleActivity(role);
    }
  }

  /** A role is visited only while some framework in it can be offered. */
  private refreshRoleActivity(role: string): void {
    const state = this.roles.get(role);
    if (!state) return;
    let any = false;
    for (const id of state.frameworks) {
      const framework = this.frameworks.get(id);
      if (framework?.active && !framework.suppressed.has(role)) {
        any = true;
        break;
      }
    }
    if (any) this.roleSorter.activate(role);
    else this.roleSorter.deactivate(role);
  }

  private checkRoles(roles: string[], suppressed: string[] | undefined): string[] {
    if (!Array.isArray(roles) || roles.length === 0) throw new AllocatorError("CORRAL_ERR_BAD_ROLE", "a framework needs at least one role");
    // Frameworks may use the default role '*' (they then get only unreserved resources).
    for (const role of roles) validRole(role, true);
    if (new Set(roles).size !== roles.length) throw new AllocatorError("CORRAL_ERR_BAD_ROLE", "a framework's roles must be distinct");
    for (const role of suppressed ?? []) {
      if (!roles.includes(role)) throw new AllocatorError("CORRAL_ERR_BAD_ROLE", `suppressed role '${role}' is not one of the framework's roles`);
    }
    return [...roles];
  }

  private rolesOf(framework: FrameworkState, roles: string[] | undefined): string[] {
    if (roles === undefined || roles.length === 0) return [...framework.roles];
    for (const role of roles) {
      if (!framework.roles.has(role)) throw new AllocatorError("CORRAL_ERR_BAD_ROLE", `framework '${framework.id}' is not subscribed to role '${role}'`);
    }
    return roles;
  }

  private agent(agentId: string): AgentState {
    const agent = this.agents.get(agentId);
    if (!agent) throw new AllocatorError("CORRAL_ERR_UNKNOWN_AGENT", `unknown agent '${agentId}'`);
    return agent;
  }

  private framework(frameworkId: string): FrameworkState {
    const framework = this.frameworks.get(frameworkId);
    if (!framework) throw new AllocatorError("CORRAL_ERR_UNKNOWN_FRAMEWORK", `unknown framework '${frameworkId}'`);
    return framework;
  }

  // ---- views ----------------------------------------------------------------------------------

  /** One agent's resources and allocations, or `undefined` when unknown. */
  agentView(agentId: string): AgentView | undefined {
    const agent = this.agents.get(agentId);
    if (!agent) return undefined;
    return {
      agentId,
      total: agent.total,
      allocated: agent.allocated,
      available: agent.available,
      active: agent.active,
      attributes: agent.attributes,
      allocations: agent.allocations,
    };
  }

  /** Scalars of all agents and what of them is allocated (offered or used), in millis by name; kept as they change, not summed on asking. */
  scalarTotals(): { total: ReadonlyMap<string, number>; allocated: ReadonlyMap<string, number> } {
    return { total: this.totals, allocated: this.allocatedTotals };
  }

  /**
   * How many calls that may change the allocator it has taken (every public method that is not a
   * read: adding, updating, removing or (de)activating an agent or framework, suppressing or
   * reviving roles, weights, quotas, recovering resources and allocation runs). Equal counts mean
   * nothing in it changed in between, so a reader that recomputes figures from scratch, such as
   * the simulator's invariant checks after every event, may skip the recomputation. Counted on
   * entry, whether the call changes anything or refuses. Reads never count (the sorters' totals,
   * which they bring up to date on asking, are no state of their own: the same totals each time).
   */
  changeCount(): number {
    return this.changes;
  }

  /** What a framework holds (offered or used), in scalar millis by name; kept as it changes. */
  frameworkScalars(frameworkId: string): ReadonlyMap<string, number> {
    return this.allocatedByFramework.get(frameworkId) ?? EMPTY_QUANTITIES;
  }

  /**
   * Calls `listener` with an agent's id whenever what is free on it or whether it is active may
   * have changed, and when it is added or removed: for readers that keep per-agent figures up to
   * date (the simulator's stranded resources) instead of walking every agent each time. The
   * listener must not call back into the allocator. Returns the function that stops the calls.
   */
  watchAgents(listener: (agentId: string) => void): () => void {
    this.agentWatchers.push(listener);
    return () => {
      const i = this.agentWatchers.indexOf(listener);
      if (i >= 0) this.agentWatchers.splice(i, 1);
    };
  }

  private notifyWatchers(agentId: string): void {
    for (const listener of this.agentWatchers) listener(agentId);
  }

  /** Agents the last {@link HierarchicalAllocator.allocate} visited (what a run cost). */
  lastRunCandidates(): number {
    return this.candidatesOfLastRun;
  }

  /** Ids of all agents, in insertion order. */
  agentIds(): string[] {
    return [...this.agents.keys()];
  }

  /** Ids of all frameworks, in insertion order. */
  frameworkIds(): string[] {
    return [...this.frameworks.keys()];
  }

  /** A framework's weighted dominant share within `role` (0 for unknown pairs). */
  frameworkShare(frameworkId: string, role: string): number {
    this.pushTotals();
    return this.roles.get(role)?.frameworkSorter.share(frameworkId) ?? 0;
  }

  /** A role's weighted dominant share; for an inner role, that of its whole subtree. */
  roleShare(role: string): number {
    this.pushTotals();
    const sorter = this.roleSorter;
    return sorter instanceof DrfSorter ? sorter.subtreeShare(role) : sorter.share(role);
  }

  /** Total resources allocated to a framework over all agents and roles. */
  frameworkAllocation(frameworkId: string): Resources {
    let sum = Resources.empty();
    for (const agent of this.agents.values()) {
      const byRole = agent.allocations.get(frameworkId);
      if (byRole) for (const resources of byRole.values()) sum = sum.add(resources);
    }
    return sum;
  }

  /** Roles known to the allocator (with frameworks, reservations or allocations). */
  knownRoles(): string[] {
    return [...this.roles.keys()].sort();
  }

  /** Whether a framework is known and active (connected). */
  isFrameworkActive(frameworkId: string): boolean {
    return this.frameworks.get(frameworkId)?.active ?? false;
  }

  /** Whether a framework has suppressed `role`. */
  isSuppressed(frameworkId: string, role: string): boolean {
    return this.frameworks.get(frameworkId)?.suppressed.has(role) ?? false;
  }

  /**
   * Checks internal consistency (for tests and the simulator's invariant checks): allocations
   * add up per agent and never exceed the agent's total. Returns the problems found.
   */
  checkInvariants(): string[] {
    const problems: string[] = [];
    for (const agent of this.agents.values()) {
      let sum = Resources.empty();
      for (const byRole of agent.allocations.values()) for (const resources of byRole.values()) sum = sum.add(resources);
      if (!sum.equals(agent.allocated)) problems.push(`agent ${agent.id}: allocations sum to ${sum} but allocated is ${agent.allocated}`);
      if (!agent.total.contains(agent.allocated)) problems.push(`agent ${agent.id}: allocated ${agent.allocated} exceeds total ${agent.total}`);
      if (!agent.allocated.add(agent.available).equals(agent.total)) problems.push(`agent ${agent.id}: allocated + available != total`);
    }
    const allocated: ScalarQuantities = new Map();
    // What frameworkAllocation() sums per framework, for all of them in one walk of the agents.
    const byFramework = new Map<string, ScalarQuantities>();
    for (const agent of this.agents.values()) {
      addQuantities(allocated, agent.allocated.quantities(), 1);
      for (const [frameworkId, byRole] of agent.allocations) {
        let sum = byFramework.get(frameworkId);
        if (!sum) byFramework.set(frameworkId, (sum = new Map()));
        for (const resources of byRole.values()) addQuantities(sum, resources.quantities(), 1);
      }
    }
    // Compared as they are, zero entries included; rendered only when they differ.
    const listed = (q: ReadonlyMap<string, number>) => [...q].sort().join(",");
    if (!sameQuantities(this.allocatedTotals, allocated, false)) problems.push(`allocated totals are ${listed(this.allocatedTotals)} but the agents' allocations sum to ${listed(allocated)}`);
    for (const frameworkId of new Set([...this.frameworks.keys(), ...this.allocatedByFramework.keys()])) {
      const keptOf = this.frameworkScalars(frameworkId);
      const summedOf = byFramework.get(frameworkId) ?? EMPTY_QUANTITIES;
      if (!sameQuantities(keptOf, summedOf, false)) problems.push(`framework ${frameworkId}: holds ${listed(keptOf)} by the running count, ${listed(summedOf)} by its allocations`);
    }
    problems.push(...this.checkQuotaBookkeeping());
    problems.push(...this.checkRoleSorterBookkeeping());
    return problems;
  }

  /**
   * Recomputes what the role sorter charges each role: its reservations, plus what it is
   * allocated that is unreserved or reserved for an ancestor, minus its reservations allocated to
   * a descendant.
   */
  private checkRoleSorterBookkeeping(): string[] {
    const charged = new Map<string, ScalarQuantities>();
    const charge = (role: string, name: string, millis: number) => {
      let q = charged.get(role);
      if (!q) charged.set(role, (q = new Map()));
      q.set(name, (q.get(name) ?? 0) + millis);
    };
    for (const agent of this.agents.values()) {
      for (const e of agent.total.entries) if (e.kind === "scalar" && e.role !== "*") charge(e.role, e.name, e.millis);
      for (const byRole of agent.allocations.values()) {
        for (const [role, resources] of byRole) {
          for (const e of resources.entries) {
            if (e.kind !== "scalar" || e.role === role) continue;
            charge(role, e.name, e.millis);
            if (e.role !== "*") charge(e.role, e.name, -e.millis);
          }
        }
      }
    }
    const problems: string[] = [];
    for (const role of new Set([...this.roles.keys(), ...charged.keys()])) {
      const kept = this.roleSorter.allocation(role);
      const fresh = charged.get(role) ?? EMPTY_QUANTITIES;
      if (!sameQuantities(kept, fresh, true)) problems.push(`role sorter charges ${role} ${nonZeroJson(kept)} but recomputed ${nonZeroJson(fresh)}`);
    }
    return problems;
  }

  /** Recomputes the incrementally kept quota figures from scratch and reports any difference. */
  private checkQuotaBookkeeping(): string[] {
    const problems: string[] = [];
    const same = (what: string, kept: ReadonlyMap<string, number> | undefined, fresh: ScalarQuantities) => {
      if (!sameQuantities(kept ?? EMPTY_QUANTITIES, fresh, true)) problems.push(`${what}: kept ${nonZeroJson(kept ?? EMPTY_QUANTITIES)} but recomputed ${nonZeroJson(fresh)}`);
    };
    const consumption = new Map<string, ScalarQuantities>();
    const free: ScalarQuantities = new Map();
    const addTo = (top: string, q: ReadonlyMap<string, number>) => {
      let m = consumption.get(top);
      if (!m) consumption.set(top, (m = new Map()));
      addQuantities(m, q, 1);
    };
    for (const agent of this.agents.values()) {
      for (const [role, reserved] of reservationsByRole(agent.total)) addTo(topLevelRole(role), reserved.quantities());
      for (const byRole of agent.allocations.values()) {
        for (const [role, resources] of byRole) addTo(topLevelRole(role), resources.unreservedQuantities());
      }
      if (agent.active) addQuantities(free, agent.available.unreservedQuantities(), 1);
    }
    for (const top of new Set([...consumption.keys(), ...this.consumption.keys()])) same(`consumption of ${top}`, this.consumption.get(top), consumption.get(top) ?? new Map());
    same("free unreserved", this.freeUnreserved, free);
    const required: ScalarQuantities = new Map();
    for (const [top, quota] of this.quotas) {
      const need: ScalarQuantities = new Map();
      for (const [name, guarantee] of quota.guarantees) {
        const missing = guarantee - (consumption.get(top)?.get(name) ?? 0);
        if (missing > 0) need.set(name, missing);
      }
      same(`unmet guarantee of ${top}`, this.unsatisfied.get(top), need);
      addQuantities(required, need, 1);
    }
    same("required headroom", this.requiredHeadroom, required);
    return problems;
  }
}

/**
 * Whether two quantity maps hold the same figures, entry by entry; with `ignoreZero`, entries of 0
 * count as absent. For the invariant checks, which run after every simulated event: comparing
 * without rendering both sides as text first. Values compare as numbers (NaN equal to NaN).
 */
function sameQuantities(a: ReadonlyMap<string, number>, b: ReadonlyMap<string, number>, ignoreZero: boolean): boolean {
  const sameValue = (x: number, y: number | undefined) => x === y || (y !== undefined && Number.isNaN(x) && Number.isNaN(y));
  if (!ignoreZero) {
    if (a.size !== b.size) return false;
    for (const [name, value] of a) if (!sameValue(value, b.get(name))) return false;
    return true;
  }
  for (const [name, value] of a) if (value !== 0 && !sameValue(value, b.get(name))) return false;
  for (const [name, value] of b) if (value !== 0 && !sameValue(value, a.get(name))) return false;
  return true;
}

/** A quantity map's non-zero entries as sorted JSON pairs, for a problem's text. */
function nonZeroJson(q: ReadonlyMap<string, number>): string {
  return JSON.stringify([...q].filter(([, v]) => v !== 0).sort());
}

/** Creates an allocator. See {@link AllocatorOptions} for the defaults. */
export function createAllocator(options: AllocatorOptions): HierarchicalAllocator {
  return new HierarchicalAllocator(options);
}
