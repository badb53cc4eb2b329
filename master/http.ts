/**
 * The master's HTTP API (fastify): health, `/state`, Prometheus `/metrics`, and the operator
 * endpoints for role weights and quotas and for tearing a framework down (`POST /teardown`).
 *
 * Every master of an HA set serves it. A standby answers `/health` (with a pointer to the leader,
 * `leaderInfo`: id, URL, term) and `/metrics` itself, and answers `/state` and the operator
 * endpoints with `307 Temporary Redirect` to the same path on the leader, as a Mesos standby does;
 * with no leader known yet it answers `503` (`CORRAL_ERR_NO_LEADER`).
 *
 * Operator input crosses a trust boundary, so it is checked twice: shapes by fastify's JSON-schema
 * validation, meaning (role names, one role per entry, guarantee <= limit) here, and finally by the
 * allocator, whose setters apply all or nothing. A rejected body changes nothing and is answered
 * with 422 and `{ message, details: [{ path, errors }] }`, paths being JSON pointers into the body.
 *
 * @module
 */

import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Logger as PinoLogger } from "pino";
import { RESOURCE_NAME_PATTERN } from "../sdk/resources.ts";
import { roleNameError } from "../sdk/roles.ts";
import { AllocatorError, MAX_QUOTA_QUANTITY } from "./allocator/index.ts";
import type { MasterCore, MasterEffect } from "./core.ts";

/** The leader as a master knows it: its id, HTTP base URL and term. */
export interface LeaderPointer {
  id: string;
  url: string;
  term?: number;
}

/** What the HTTP layer needs from the shell. */
export interface MasterHttpDeps {
  /** The core whose state is served (the current term's; a standby's is empty). */
  core(): MasterCore;
  log: PinoLogger;
  /** Facts about this master for `/health` and `/state`; `leaderInfo` is undefined while no leader is known. */
  info(): { masterId: string; cluster: string; epoch: number; leader: boolean; startedAtMs: number; leaderInfo: LeaderPointer | undefined };
  /** The `/metrics` body. */
  metrics(): string;
  /**
   * Called after an operator change was applied, with the registry writes that keep it (the shell
   * carries them out and runs an allocation).
   */
  afterChange(effects: MasterEffect[]): void;
  /** Largest request body accepted, in bytes. @default 1048576 */
  bodyLimitBytes?: number;
}

/** One entry of a 422 answer. */
export interface ValidationDetail {
  /** JSON pointer into the request body, e.g. `/0/weight`; `""` is the whole body. */
  path: string;
  errors: string[];
}

/** A request body that is well-formed JSON but breaks a rule (answered with 422). */
export class RequestValidationError extends Error {
  constructor(readonly details: ValidationDetail[]) {
    super(summarise(details));
    this.name = "RequestValidationError";
  }
}

/**
 * Smallest role weight the API takes. A role's share is divided by its weight, and a weight far
 * smaller (5e-324 is a valid JSON number) made it Infinity, which JSON cannot carry.
 */
export const MIN_ROLE_WEIGHT = 0.000001;

/** Most entries one PUT may carry. */
export const MAX_OPERATOR_ENTRIES = 1000;
/** Most resource names one quota may name. */
export const MAX_QUOTA_RESOURCES = 64;

const quantities = {
  type: "object",
  maxProperties: MAX_QUOTA_RESOURCES,
  propertyNames: { pattern: RESOURCE_NAME_PATTERN },
  additionalProperties: { type: "number", minimum: 0, maximum: MAX_QUOTA_QUANTITY },
} as const;

const WEIGHTS_BODY = {
  type: "array",
  maxItems: MAX_OPERATOR_ENTRIES,
  items: {
    type: "object",
    additionalProperties: false,
    required: ["role", "weight"],
    properties: { role: { type: "string", minLength: 1, maxLength: 256 }, weight: { type: "number", minimum: MIN_ROLE_WEIGHT } },
  },
} as const;

const QUOTA_BODY = {
  type: "array",
  maxItems: MAX_OPERATOR_ENTRIES,
  items: {
    type: "object",
    additionalProperties: false,
    required: ["role"],
    properties: { role: { type: "string", minLength: 1, maxLength: 256 }, guarantees: quantities, limits: quantities },
  },
} as const;

interface WeightEntry {
  role: string;
  weight: number;
}

interface QuotaEntry {
  role: string;
  guarantees?: Record<string, number>;
  limits?: Record<string, number>;
}

function pointer(...tokens: Array<string | number>): string {
  return tokens.map((t) => `/${String(t).replace(/~/g, "~0").replace(/\//g, "~1")}`).join("");
}

function summarise(details: ValidationDetail[]): string {
  const first = details[0];
  if (!first) return "invalid request body";
  const more = details.length > 1 ? ` (and ${details.length - 1} more)` : "";
  return `invalid request body: ${first.path || "(body)"} ${first.errors.join(", ")}${more}`;
}

/** Groups problems by path, keeping first-seen order. */
function collect(problems: Array<[path: string, error: string]>): ValidationDetail[] {
  const byPath = new Map<string, string[]>();
  for (const [path, error] of problems) {
    const list = byPath.get(path) ?? [];
    if (!list.includes(error)) list.push(error);
    byPath.set(path, list);
  }
  return [...byPath].map(([path, errors]) => ({ path, errors }));
}

interface SchemaError {
  instancePath: string;
  message?: string;
  keyword: string;
  params: Record<string, unknown>;
}

/** Turns ajv's errors into details whose path points at the offending field itself. */
function schemaDetails(errors: readonly SchemaError[]): ValidationDetail[] {
  return collect(
    errors.map((e) => {
      if (e.keyword === "required" && typeof e.params.missingProperty === "string") return [e.instancePath + pointer(e.params.missingProperty), "is required"];
      if (e.keyword === "additionalProperties" && typeof e.params.additionalProperty === "string") {
        return [e.instancePath + pointer(e.params.additionalProperty), "is not allowed"];
      }
      if (typeof e.params.propertyName === "string") return [e.instancePath + pointer(e.params.propertyName), `is not a valid resource name (${RESOURCE_NAME_PATTERN})`];
      return [e.instancePath, e.message ?? e.keyword];
    }),
  );
}

/** Role rules and one entry per role, which a schema cannot say. */
function roleProblems(entries: Array<{ role: string }>, topLevelOnly: boolean): Array<[string, string]> {
  const problems: Array<[string, string]> = [];
  const seen = new Map<string, number>();
  for (const [i, { role }] of entries.entries()) {
    const problem = roleNameError(role, false);
    if (problem) problems.push([pointer(i, "role"), problem]);
    else if (topLevelOnly && role.includes("/")) problems.push([pointer(i, "role"), `quota is set per top-level role; '${role}' is nested`]);
    const earlier = seen.get(role);
    if (earlier !== undefined) problems.push([pointer(i, "role"), `duplicate role '${role}' (also at ${pointer(earlier)})`]);
    else seen.set(role, i);
  }
  return problems;
}

function quotaProblems(entries: QuotaEntry[], core: MasterCore): Array<[string, string]> {
  const problems = roleProblems(entries, true);
  for (const [i, entry] of entries.entries()) {
    for (const field of ["guarantees", "limits"] as const) {
      for (const name of Object.keys(entry[field] ?? {})) {
        const problem = core.allocator.quotaResourceProblem(name);
        if (problem) problems.push([pointer(i, field, name), problem]);
      }
    }
    for (const [name, guarantee] of Object.entries(entry.guarantees ?? {})) {
      const limit = entry.limits?.[name];
      if (limit !== undefined && guarantee > limit) problems.push([pointer(i, "guarantees", name), `must be <= limits.${name} (${limit}), got ${guarantee}`]);
    }
  }
  return problems;
}

/** Applies `change`, turning the allocator's refusal into a 422 (it has rolled back by then). */
function applyOrReject(change: () => MasterEffect[]): MasterEffect[] {
  try {
    return change();
  } catch (error) {
    if (error instanceof AllocatorError) throw new RequestValidationError([{ path: "", errors: [`${error.code}: ${error.message}`] }]);
    throw error;
  }
}

/** The current weights, sorted by role. */
function weightsView(core: MasterCore): WeightEntry[] {
  return [...core.allocator.getWeights()].map(([role, weight]) => ({ role, weight })).sort((a, b) => a.role.localeCompare(b.role));
}

/** The current quotas, sorted by role. */
function quotaView(core: MasterCore): Array<Required<QuotaEntry>> {
  return [...core.allocator.getQuotas()].map(([role, q]) => ({ role, guarantees: q.guarantees, limits: q.limits })).sort((a, b) => a.role.localeCompare(b.role));
}

/**
 * Route config of the endpoints a standby redirects to the leader. A flag on the route rather than
 * a list of paths: the router decodes the path (`/%77eights` is `/weights`), a raw-URL check did not.
 */
interface RouteFlags {
  leaderOnly?: boolean;
}

const LEADER_ONLY: { config: RouteFlags } = { config: { leaderOnly: true } };

/** The path of a request URL, percent-decoded as the router matches it; undefined if it does not decode. */
function decodedPath(url: string): string | undefined {
  try {
    return decodeURIComponent(url.split("?")[0]!);
  } catch {
    return undefined;
  }
}

/** Builds (does not start) the master's fastify server. */
export function createMasterHttp(deps: MasterHttpDeps): FastifyInstance {
  const core = () => deps.core();
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    // Scrapes and polls every few seconds would drown the log; failures are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.bodyLimitBytes ?? 1_048_576,
    // Strict shapes: no type coercion ("2" is not a weight), unknown fields are errors, every
    // problem reported at once.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: true } },
  });

  // Operator bodies are JSON; a text/plain body is answered 415 rather than validated as a string.
  app.removeContentTypeParser("text/plain");

  // Methods by path, so that a known path asked with another method is answered 405 with `Allow`
  // (as Mesos's endpoints answer) rather than 404. Every path here is static.
  const methodsByPath = new Map<string, Set<string>>();
  app.addHook("onRoute", (route) => {
    const methods = methodsByPath.get(route.url) ?? new Set<string>();
    for (const method of [route.method].flat()) methods.add(method);
    methodsByPath.set(route.url, methods);
  });
  app.setNotFoundHandler(async (request, reply) => {
    const path = decodedPath(request.url);
    const allowed = path === undefined ? undefined : methodsByPath.get(path);
    if (!allowed) return reply.status(404).send({ message: `no endpoint ${request.method} ${path ?? request.url}`, code: "CORRAL_ERR_NOT_FOUND" });
    const allow = [...allowed].sort().join(", ");
    return reply
      .status(405)
      .header("allow", allow)
      .send({ message: `method ${request.method} is not allowed on ${path}; allowed: ${allow}`, code: "CORRAL_ERR_METHOD_NOT_ALLOWED" });
  });

  app.setErrorHandler((error: FastifyError | RequestValidationError, request, reply) => {
    if (error instanceof RequestValidationError) {
      return reply.status(422).send({ message: error.message, details: error.details });
    }
    if (error.validation) {
      const details = schemaDetails(error.validation as unknown as SchemaError[]);
      return reply.status(422).send({ message: summarise(details), details });
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      const message = error.code === "FST_ERR_CTP_INVALID_JSON_BODY" ? `request body is not valid JSON: ${error.message}` : error.message;
      return reply.status(status).send({ message, ...(error.code ? { code: error.code } : {}) });
    }
    request.log.error({ err: error, url: request.url, method: request.method }, "http handler failed");
    return reply.status(500).send({ message: "internal error" });
  });

  /** Sends a standby's answer (307 to the leader, or 503 while none is known); false while this master leads. */
  const answeredAsStandby = (request: FastifyRequest, reply: FastifyReply): boolean => {
    const { leader, leaderInfo } = deps.info();
    if (leader) return false;
    if (!leaderInfo?.url) {
      void reply.status(503).header("retry-after", "1").send({ message: "this master is a standby and no leading master is known yet; retry shortly", code: "CORRAL_ERR_NO_LEADER" });
    } else {
      void reply.redirect(`${leaderInfo.url.replace(/\/+$/, "")}${request.url}`, 307);
    }
    return true;
  };

  // Before the body is read: a standby does not validate what the leader will.
  app.addHook("onRequest", async (request, reply) => {
    if (!(request.routeOptions.config as RouteFlags | undefined)?.leaderOnly) return;
    if (answeredAsStandby(request, reply)) return reply;
  });

  // Cheap enough to poll: says whether this master leads, whom to ask otherwise, and whether a
  // new leader still waits for the registry's agents before it offers.
  app.get("/health", async () => {
    const { masterId, leader, epoch, leaderInfo } = deps.info();
    return { status: "ok", masterId, leader, epoch, leaderInfo: leaderInfo ?? null, recovery: core().recoveryStatus() };
  });

  // A standby's own state is empty: a reader is sent to the leader's (as Mesos's standbys do),
  // and learns whom it follows from /health.
  app.get("/state", LEADER_ONLY, async () => {
    const { cluster, epoch, leader, startedAtMs, leaderInfo } = deps.info();
    return { ...core().state(), cluster, epoch, leader, leaderInfo: leaderInfo ?? null, startedAtMs };
  });

  // A bookmark for the leader whichever master is asked (Mesos's /redirect): the leader's base URL.
  app.get("/redirect", async (_request, reply) => {
    const url = deps.info().leaderInfo?.url;
    if (!url) return reply.status(503).header("retry-after", "1").send({ message: "no leading master is known yet; retry shortly", code: "CORRAL_ERR_NO_LEADER" });
    return reply.redirect(url, 307);
  });

  app.get("/metrics", async (_request, reply) => {
    return reply.type("text/plain; version=0.0.4; charset=utf-8").send(deps.metrics());
  });

  // A form body (`frameworkId=<id>`, as Mesos's /teardown takes it) or JSON (`{"frameworkId": ...}`).
  app.addContentTypeParser("application/x-www-form-urlencoded", { parseAs: "string" }, (_request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)));
  });

  app.post<{ Body: unknown }>("/teardown", LEADER_ONLY, async (request, reply) => {
    if (answeredAsStandby(request, reply)) return reply;
    const frameworkId = (request.body as { frameworkId?: unknown } | null | undefined)?.frameworkId;
    if (typeof frameworkId !== "string" || frameworkId === "") {
      return reply.status(400).send({ message: "the body must give 'frameworkId' (form: frameworkId=<id>, or JSON: {\"frameworkId\": \"<id>\"})", code: "CORRAL_ERR_INVALID_REQUEST" });
    }
    const result = core().teardownFramework(frameworkId);
    if (!result.ok) {
      const why = result.reason === "torn-down" ? "was torn down already" : "is not registered";
      return reply.status(404).send({ message: `framework '${frameworkId}' ${why}`, code: "CORRAL_ERR_UNKNOWN_FRAMEWORK" });
    }
    deps.log.info({ frameworkId }, "framework torn down by the operator");
    deps.afterChange(result.effects);
    return { frameworkId };
  });

  app.get("/weights", LEADER_ONLY, async () => weightsView(core()));

  app.put<{ Body: WeightEntry[] }>("/weights", { ...LEADER_ONLY, schema: { body: WEIGHTS_BODY } }, async (request, reply) => {
    // Leadership may have moved while the body was read; a standby's core must not be changed.
    if (answeredAsStandby(request, reply)) return reply;
    const entries = request.body;
    const problems = roleProblems(entries, false);
    if (problems.length > 0) throw new RequestValidationError(collect(problems));
    const effects = applyOrReject(() => core().setWeights(entries.map(({ role, weight }) => ({ role, weight }))));
    deps.log.info({ weights: entries }, "role weights updated");
    deps.afterChange(effects);
    return weightsView(core());
  });

  app.get("/quota", LEADER_ONLY, async () => quotaView(core()));

  app.put<{ Body: QuotaEntry[] }>("/quota", { ...LEADER_ONLY, schema: { body: QUOTA_BODY } }, async (request, reply) => {
    if (answeredAsStandby(request, reply)) return reply;
    const entries = request.body;
    const problems = quotaProblems(entries, core());
    if (problems.length > 0) throw new RequestValidationError(collect(problems));
    const effects = applyOrReject(() =>
      core().setQuotas(entries.map((e) => ({ role: e.role, ...(e.guarantees ? { guarantees: e.guarantees } : {}), ...(e.limits ? { limits: e.limits } : {}) }))),
    );
    deps.log.info({ quotas: entries }, "role quotas updated");
    deps.afterChange(effects);
    return quotaView(core());
  });

  return app;
}
