/**
 * The one table of NATS subjects Corral uses.
 *
 * Every subject is `corral.<cluster>.<...>`, so several clusters can share one NATS deployment.
 * The table says, for each subject, who may publish, who may subscribe and which envelope payloads
 * it carries; {@link permissionsFor} turns it into NATS authorization permissions and the codec uses
 * it to drop a payload that arrived on the wrong subject. Add a subject here or nowhere.
 *
 * @module
 */

import type { PayloadKind } from "./types.ts";

/** The first token of every Corral subject. */
export const SUBJECT_ROOT = "corral";

/** The parties on the bus. An operator is a CLI or tool acting for a person. */
export type Role = "master" | "agent" | "framework" | "operator";

export const ROLES: readonly Role[] = ["master", "agent", "framework", "operator"];

/** The names of the table's entries. */
export type SubjectName =
  | "masterScheduler"
  | "principalScheduler"
  | "frameworkEvents"
  | "principalFrameworkEvents"
  | "masterAgent"
  | "agentCmd"
  | "masterLeader";

/** Which id, if any, a subject is parameterised by. */
export type SubjectIdKind = "framework" | "agent";

/** One row of the subject table. */
export interface SubjectSpec {
  readonly name: SubjectName;
  /**
   * The tokens after `corral.<cluster>`; `"{id}"` is where the framework or agent id goes,
   * `"{principal}"` where a framework's principal goes. Two subjects never share a shape, so
   * {@link parseSubject} is unambiguous.
   */
  readonly tokens: readonly string[];
  /** Present when the subject is per framework or per agent. */
  readonly idKind?: SubjectIdKind;
  /**
   * Which frameworks use the subject: `"none"` for those without a principal (all of them share
   * it), `"own"` for those with one (the `{principal}` token is theirs). {@link permissionsFor}
   * gives a framework the one set or the other, never both. Absent on subjects frameworks do not
   * use, and on the leader's announcements, which every framework hears.
   */
  readonly principal?: "none" | "own";
  /**
   * True when a publisher speaks only for the id in the subject: a receiver drops a message whose
   * envelope `sender_id` is not that id. With {@link permissionsFor}'s per-id permissions this
   * is what stops one agent from speaking in another's name.
   */
  readonly senderIsId?: boolean;
  /** Stable low-cardinality label for metrics and logs, e.g. `"agent.cmd"`. */
  readonly kind: string;
  readonly publishers: readonly Role[];
  readonly subscribers: readonly Role[];
  /** Envelope payloads a receiver accepts on this subject; anything else is dropped. */
  readonly payloads: readonly PayloadKind[];
  /** `"request"` when senders expect a reply on their inbox. */
  readonly style: "request" | "publish" | "request-or-publish";
  readonly description: string;
}

/** The table. Order is documentation order only. */
export const SUBJECTS: Readonly<Record<SubjectName, SubjectSpec>> = {
  masterScheduler: {
    name: "masterScheduler",
    tokens: ["master", "scheduler"],
    principal: "none",
    kind: "master.scheduler",
    publishers: ["framework"],
    subscribers: ["master"],
    payloads: ["schedulerCall"],
    style: "request",
    description:
      "Calls of frameworks without a principal, all on this one subject. Only the leading master " +
      "subscribes, so a standby never answers; replies are CallResponse, or SchedulerEvent(subscribed) " +
      "for SUBSCRIBE. A master with requirePrincipal refuses every call here.",
  },
  principalScheduler: {
    name: "principalScheduler",
    tokens: ["master", "scheduler", "{principal}"],
    principal: "own",
    kind: "master.scheduler.principal",
    publishers: ["framework"],
    subscribers: ["master"],
    payloads: ["schedulerCall"],
    style: "request",
    description:
      "Calls of the frameworks of one principal, as on master.scheduler. The master takes the " +
      "principal from the subject: a SUBSCRIBE naming another principal, or a call for a framework " +
      "registered under another principal, is refused (CORRAL_ERR_UNAUTHORIZED).",
  },
  frameworkEvents: {
    name: "frameworkEvents",
    tokens: ["framework", "{id}", "events"],
    idKind: "framework",
    principal: "none",
    kind: "framework.events",
    publishers: ["master"],
    subscribers: ["framework"],
    payloads: ["schedulerEvent"],
    style: "publish",
    description: "Events the master pushes to one framework without a principal: offers, rescinds, status updates, heartbeats.",
  },
  principalFrameworkEvents: {
    name: "principalFrameworkEvents",
    tokens: ["framework", "{principal}", "{id}", "events"],
    idKind: "framework",
    principal: "own",
    kind: "framework.principal.events",
    publishers: ["master"],
    subscribers: ["framework"],
    payloads: ["schedulerEvent"],
    style: "publish",
    description: "Events the master pushes to one framework of a principal, as on framework.<id>.events.",
  },
  masterAgent: {
    name: "masterAgent",
    tokens: ["master", "agent", "{id}"],
    idKind: "agent",
    senderIsId: true,
    kind: "master.agent",
    publishers: ["agent"],
    subscribers: ["master"],
    payloads: ["agentToMaster"],
    style: "request-or-publish",
    description:
      "One agent's messages to the master, on the agent's own subject; the envelope's sender id " +
      "must be the subject's id (an agent not yet given an id registers under its instance id). " +
      "REGISTER and REREGISTER are requests answered with MasterToAgent(registered|reregistered); " +
      "pongs, status updates and unregister notices are plain publishes.",
  },
  agentCmd: {
    name: "agentCmd",
    tokens: ["agent", "{id}", "cmd"],
    idKind: "agent",
    kind: "agent.cmd",
    publishers: ["master"],
    subscribers: ["agent"],
    payloads: ["masterToAgent"],
    style: "publish",
    description: "Master commands to one agent: pings, run/kill task, acknowledgements, re-register requests.",
  },
  masterLeader: {
    name: "masterLeader",
    tokens: ["master", "leader"],
    kind: "master.leader",
    publishers: ["master"],
    subscribers: ["master", "agent", "framework", "operator"],
    payloads: ["masterInfo"],
    style: "publish",
    description:
      "The leading master announces itself (id, epoch, HTTP endpoint) on election and periodically, so " +
      "components learn the current epoch and notice a failover.",
  },
};

/** Payload kinds that travel as replies on request inboxes rather than on a table subject. */
export const REPLY_PAYLOADS: readonly PayloadKind[] = ["callResponse", "schedulerEvent", "masterToAgent"];

/** Thrown when a cluster name or id cannot be used as a subject token. */
export class SubjectTokenError extends RangeError {
  /** The name of the offending argument, e.g. `"agentId"`. */
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "SubjectTokenError";
    this.field = field;
  }
}

/** Longest accepted cluster name or id, in characters; keeps subjects well below NATS limits. */
export const MAX_TOKEN_LENGTH = 128;

// `.` separates tokens, `*` and `>` are wildcards, whitespace and control characters end or
// corrupt a subject in the NATS protocol.
const FORBIDDEN_TOKEN_CHARS = /[.*>\s\u0000-\u001f\u007f]/u;

/**
 * Returns why `value` cannot be a subject token, or `undefined` if it can.
 * A token is 1-{@link MAX_TOKEN_LENGTH} characters without `.`, `*`, `>`, whitespace or control
 * characters.
 */
export function tokenProblem(value: unknown): string | undefined {
  if (typeof value !== "string") return `must be a string, got ${typeof value}`;
  if (value.length === 0) return "must not be empty";
  if (value.length > MAX_TOKEN_LENGTH) return `must be at most ${MAX_TOKEN_LENGTH} characters, got ${value.length}`;
  const bad = FORBIDDEN_TOKEN_CHARS.exec(value);
  if (bad) return `must not contain ${JSON.stringify(bad[0])} (dots, wildcards, whitespace and control characters are not allowed)`;
  return undefined;
}

/** True when `value` can be used as a cluster name or id in a subject. */
export function isValidToken(value: unknown): value is string {
  return tokenProblem(value) === undefined;
}

/** Throws {@link SubjectTokenError} naming `field` unless `value` is a valid token. */
export function assertToken(value: unknown, field: string): asserts value is string {
  const problem = tokenProblem(value);
  if (problem !== undefined) throw new SubjectTokenError(field, problem);
}

function idFieldName(idKind: SubjectIdKind): string {
  return idKind === "framework" ? "frameworkId" : "agentId";
}

/**
 * Builds the concrete subject `name` for `cluster`, with `id` when the subject is per framework or
 * per agent and `principal` when it is per principal. Throws {@link SubjectTokenError} on a bad
 * cluster name, id or principal, or a missing one.
 */
export function subjectFor(name: SubjectName, cluster: string, id?: string, principal?: string): string {
  const spec = SUBJECTS[name];
  assertToken(cluster, "cluster");
  const parts = [SUBJECT_ROOT, cluster];
  for (const token of spec.tokens) {
    if (token === "{id}") {
      assertToken(id, idFieldName(spec.idKind!));
      parts.push(id);
    } else if (token === "{principal}") {
      assertToken(principal, "principal");
      parts.push(principal);
    } else {
      parts.push(token);
    }
  }
  return parts.join(".");
}

/**
 * The subject `name` for `cluster` with `*` in place of the id and the principal (or the exact
 * subject when there is neither): for monitors and for permissions.
 */
export function subjectWildcard(name: SubjectName, cluster: string): string {
  assertToken(cluster, "cluster");
  return [SUBJECT_ROOT, cluster, ...SUBJECTS[name].tokens.map((t) => (t === "{id}" || t === "{principal}" ? "*" : t))].join(".");
}

/**
 * Framework calls to the master (request/reply): `corral.<cluster>.master.scheduler.<principal>`
 * for a framework with a principal, `corral.<cluster>.master.scheduler` for one without (`""` or
 * none).
 */
export function masterSchedulerSubject(cluster: string, principal?: string): string {
  return principal ? subjectFor("principalScheduler", cluster, undefined, principal) : subjectFor("masterScheduler", cluster);
}

/**
 * Events for one framework: `corral.<cluster>.framework.<principal>.<frameworkId>.events` for a
 * framework with a principal, `corral.<cluster>.framework.<frameworkId>.events` for one without.
 */
export function frameworkEventsSubject(cluster: string, frameworkId: string, principal?: string): string {
  return principal ? subjectFor("principalFrameworkEvents", cluster, frameworkId, principal) : subjectFor("frameworkEvents", cluster, frameworkId);
}

/**
 * `corral.<cluster>.master.agent.<agentId>`: one agent's messages to the master (`agentId` is
 * the instance id the agent sends as before the master has given it an id).
 */
export function masterAgentSubject(cluster: string, agentId: string): string {
  return subjectFor("masterAgent", cluster, agentId);
}

/** `corral.<cluster>.agent.<agentId>.cmd`: master commands to one agent. */
export function agentCmdSubject(cluster: string, agentId: string): string {
  return subjectFor("agentCmd", cluster, agentId);
}

/** `corral.<cluster>.master.leader`: the leading master's announcements. */
export function masterLeaderSubject(cluster: string): string {
  return subjectFor("masterLeader", cluster);
}

/** All subjects of one cluster, with the cluster name checked once. */
export interface ClusterSubjects {
  readonly cluster: string;
  /** See {@link masterSchedulerSubject}: the principal's subject, or the shared one without a principal. */
  masterScheduler(principal?: string): string;
  /** See {@link frameworkEventsSubject}: under the principal, or without one. */
  frameworkEvents(frameworkId: string, principal?: string): string;
  masterAgent(agentId: string): string;
  agentCmd(agentId: string): string;
  masterLeader(): string;
}

/**
 * Binds the subject builders to `cluster` (validated now, so later calls only check ids) and keeps
 * what they build: a component publishes to the same few subjects over and over (the master to
 * each of its agents and frameworks, a framework to the master), and a subject used again also
 * keeps its string hash, so looking it up by subject costs less. At most `maxIds` subjects per
 * kind of id are kept; the memo starts over when full.
 * @param maxIds @default 65536
 */
export function clusterSubjects(cluster: string, maxIds = 65_536): ClusterSubjects {
  assertToken(cluster, "cluster");
  const memo = (build: (id: string, principal: string) => string) => {
    const subjects = new Map<string, string>();
    return (id: string, principal = ""): string => {
      // No token holds a NUL, so the key is unambiguous; a bad token fails in build, unkept.
      const key = principal === "" ? id : `${principal}\u0000${id}`;
      let subject = subjects.get(key);
      if (subject === undefined) {
        subject = build(id, principal);
        if (subjects.size >= maxIds) subjects.clear();
        subjects.set(key, subject);
      }
      return subject;
    };
  };
  const frameworkEvents = memo((id, principal) => frameworkEventsSubject(cluster, id, principal));
  const schedulers = memo((principal) => masterSchedulerSubject(cluster, principal));
  const masterAgent = memo((id) => masterAgentSubject(cluster, id));
  const agentCmd = memo((id) => agentCmdSubject(cluster, id));
  const masterLeader = masterLeaderSubject(cluster);
  return {
    cluster,
    masterScheduler: (principal = "") => schedulers(principal),
    frameworkEvents: (frameworkId, principal = "") => frameworkEvents(frameworkId, principal),
    masterAgent: (agentId) => masterAgent(agentId),
    agentCmd: (agentId) => agentCmd(agentId),
    masterLeader: () => masterLeader,
  };
}

/** What {@link parseSubject} recognised. */
export interface ParsedSubject {
  readonly spec: SubjectSpec;
  readonly cluster: string;
  /** The framework or agent id, for per-id subjects. */
  readonly id?: string;
  /** The framework principal, for per-principal subjects. */
  readonly principal?: string;
}

/** Recognises a concrete Corral subject; `undefined` for anything else (including inboxes). */
export function parseSubject(subject: string): ParsedSubject | undefined {
  const parts = subject.split(".");
  if (parts.length < 3 || parts[0] !== SUBJECT_ROOT || !isValidToken(parts[1])) return undefined;
  const rest = parts.slice(2);
  for (const spec of Object.values(SUBJECTS)) {
    if (spec.tokens.length !== rest.length) continue;
    let id: string | undefined;
    let principal: string | undefined;
    const matches = spec.tokens.every((token, i) => {
      const part = rest[i]!;
      if (token === "{id}") id = part;
      else if (token === "{principal}") principal = part;
      else return token === part;
      return isValidToken(part);
    });
    if (matches) return { spec, cluster: parts[1]!, ...(id !== undefined ? { id } : {}), ...(principal !== undefined ? { principal } : {}) };
  }
  return undefined;
}

/**
 * The metrics label for a subject: the table's `kind` (`"agent.cmd"`), `"reply"` for NATS inboxes,
 * `"unknown"` otherwise. Bounded by the table, so it is safe as a Prometheus label.
 */
export function subjectKind(subject: string): string {
  const parsed = parseSubject(subject);
  if (parsed) return parsed.spec.kind;
  if (subject.startsWith("_INBOX.")) return "reply";
  return "unknown";
}

/** NATS subject permissions in the shape of a nats-server `authorization` user entry. */
export interface NatsPermissions {
  publish: { allow: string[] };
  subscribe: { allow: string[] };
  /**
   * Lets the user publish once to the reply subject of each request it received, without a
   * blanket permission on `_INBOX.>`; needed by whoever answers requests.
   */
  allow_responses?: boolean;
}

/** Options of {@link permissionsFor}. */
export interface PermissionOptions {
  /**
   * Restricts a framework's or agent's per-id subjects to its own id. Without it the
   * permissions cover every framework (or agent) of the cluster, of the principal if one is given.
   * @default undefined (all ids)
   */
  id?: string;
  /**
   * The framework principal this NATS user is (role `"framework"` only). With it, the user may
   * call the master only on its principal's subject and hear only its principal's frameworks'
   * events, so the master can trust the principal a call comes under; without it, the user gets
   * the subjects of frameworks without a principal, which all share one call subject.
   * @default undefined (a framework without a principal)
   */
  principal?: string;
  /**
   * Inbox prefix this user's requests use for replies; it may subscribe below it.
   * @default "_INBOX"
   */
  inboxPrefix?: string;
  /** Extra subjects to allow (JetStream API, KV buckets, ...), appended verbatim. @default none */
  extra?: { publish?: string[]; subscribe?: string[] };
}

/**
 * NATS permissions for `role` in `cluster`, derived from {@link SUBJECTS}: an agent may not publish
 * framework calls, a framework may not publish to agents, and so on. Given an agent's `id`, the
 * agent may publish to the master only on its own subject, so it cannot speak for another agent.
 * Given a framework's `principal`, the framework may publish calls only on that principal's
 * subject and subscribe only to that principal's events (of its `id`, if given), so it can neither
 * call as another principal nor read another principal's events. JetStream users (the master's
 * store, Marathon's store) additionally need `$JS.API.>` and their KV subjects through `extra`.
 * @throws {SubjectTokenError} on a bad cluster, id or principal, or a principal for another role
 */
export function permissionsFor(role: Role, cluster: string, options: PermissionOptions = {}): NatsPermissions {
  assertToken(cluster, "cluster");
  if (options.principal !== undefined) {
    if (role !== "framework") throw new SubjectTokenError("principal", `is for the framework role only, not ${role}`);
    assertToken(options.principal, "principal");
  }
  const publish = new Set<string>();
  const subscribe = new Set<string>();
  let requests = false;
  let answers = false;
  for (const spec of Object.values(SUBJECTS)) {
    if (role === "framework" && spec.principal !== undefined && (spec.principal === "own") !== (options.principal !== undefined)) continue;
    const subject = scopedSubject(spec, role, cluster, options.id, options.principal);
    if (spec.publishers.includes(role)) {
      publish.add(subject);
      if (spec.style !== "publish") requests = true;
    }
    if (spec.subscribers.includes(role)) {
      subscribe.add(subject);
      if (spec.style !== "publish") answers = true;
    }
  }
  // Requesters receive replies on their inbox; responders publish to others' inboxes.
  if (requests) subscribe.add(`${options.inboxPrefix ?? "_INBOX"}.>`);
  for (const s of options.extra?.publish ?? []) publish.add(s);
  for (const s of options.extra?.subscribe ?? []) subscribe.add(s);
  const permissions: NatsPermissions = { publish: { allow: [...publish] }, subscribe: { allow: [...subscribe] } };
  if (answers) permissions.allow_responses = true;
  return permissions;
}

/**
 * A spec's subject as `role` sees it: its own id and principal when given and the subject is
 * "its", `*` for the rest.
 */
function scopedSubject(spec: SubjectSpec, role: Role, cluster: string, id: string | undefined, principal: string | undefined): string {
  const own = (spec.idKind === "agent" && role === "agent") || (spec.idKind === "framework" && role === "framework");
  const ownPrincipal = spec.principal === "own" && role === "framework" ? principal : undefined;
  const parts = [SUBJECT_ROOT, cluster];
  for (const token of spec.tokens) {
    if (token === "{id}") {
      if (own && id !== undefined) assertToken(id, idFieldName(spec.idKind!));
      parts.push(own && id !== undefined ? id : "*");
    } else if (token === "{principal}") parts.push(ownPrincipal ?? "*");
    else parts.push(token);
  }
  return parts.join(".");
}
