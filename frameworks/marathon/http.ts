/**
 * Marathon's REST API (v2), on fastify. Bodies are parsed here (unparseable JSON: 400), checked by
 * `app-spec.ts` (422 with Marathon's `{message, details}`), and only then handed to the core, so a
 * rejected request changes and persists nothing. Writes answer `{deploymentId, version}` with a
 * `Marathon-Deployment-Id` header; a write to an app held by a deployment answers 409 with the
 * deployment ids unless `force=true`.
 *
 * @module
 */

import type { ServerResponse } from "node:http";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Clock } from "../../sdk/clock.ts";
import type { Logger } from "../../sdk/transport.ts";
import { isRollbackRequest, validateApp, validateAppUpdate, type NormalizedApp } from "./app-spec.ts";
import { ConflictError, iso, NotFoundError, RefusedError, treeChildGroups, type AppChange, type AppRecord, type GroupChanges, type Instance, type MarathonCore, type MarathonEffect, type MarathonEvent, type RootGroupSnapshot, type WriteResult } from "./core.ts";
import { validateGroup, type NormalizedGroup } from "./group-spec.ts";
import { marathonOpenApi } from "./openapi.ts";
import { isSelfOrAncestorId, pathSegments, resolvePathId } from "./path-id.ts";
import { INVALID_JSON, isJsonObject, OBJECT_NOT_VALID, parseJsonBody, type ErrorDetail, type ValidationFailure } from "./validation.ts";

/** What the HTTP layer needs from the shell. */
export interface MarathonHttpDeps {
  core: MarathonCore;
  clock: Clock;
  /** Runs a core input and applies its effects (serialised with every other input). */
  input<T extends MarathonEffect[] | { effects: MarathonEffect[] }>(fn: () => T): Promise<T>;
  info(): { frameworkId: string | undefined; url: string; frameworkName: string; role: string; cluster: string; startedAtMs: number };
  /**
   * Whether this instance leads, the leader's URL (undefined while unknown) and the URL this
   * instance is known by to the others (@default `info().url`).
   */
  leadership(): { leading: boolean; leaderUrl: string | undefined; selfUrl?: string };
  onEvent(listener: (event: MarathonEvent) => void): () => void;
  emit(event: MarathonEvent): void;
  metrics(): string;
  log: Logger;
  /** Largest request body, bytes. @default 1048576 */
  bodyLimitBytes?: number;
  /** SSE clients at most. @default 256 */
  maxEventStreams?: number;
}

const DEPLOYMENT_HEADER = "Marathon-Deployment-Id";
/** On every answer of the leader: its URL. */
export const LEADER_HEADER = "X-Marathon-Leader";
/** On requests a standby forwards and on the answers it passes back: `1.1 <standby host:port>`. */
export const VIA_HEADER = "X-Marathon-Via";
const NO_LEADER_MESSAGE = "Could not determine the current leader";
/** A standby waits this long for the leader's answer before giving up with 504. */
const PROXY_TIMEOUT_MS = 30_000;
/** Headers that describe one connection, not the message: never forwarded either way. */
const HOP_BY_HOP_HEADERS = new Set(["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer", "host", "content-length"]);

function trimUrl(url: string): string {
  return url.replace(/\/+$/, "");
}

function hostPort(url: string): string {
  return trimUrl(url).replace(/^https?:\/\//, "");
}

/**
 * Forwards a request to the leader and passes its answer back, as Marathon's standbys do: the
 * request keeps its method, body and headers (but those of the connection), gains
 * `X-Forwarded-For` and `X-Marathon-Via`; the answer keeps the leader's status and headers (its
 * `X-Marathon-Leader` included) and gains `X-Marathon-Via`. A request that already came through
 * this standby is a loop (two instances each believing the other leads) and is refused with 502.
 */
async function forwardToLeader(req: FastifyRequest, reply: FastifyReply, leaderUrl: string, via: string): Promise<FastifyReply> {
  const viaSoFar = [req.headers[VIA_HEADER.toLowerCase()] ?? []].flat().join(",");
  if (viaSoFar.split(",").some((hop) => hop.trim() === via)) return reply.code(502).send({ message: "Detected proxying loop." });
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || HOP_BY_HOP_HEADERS.has(name) || name === VIA_HEADER.toLowerCase() || name === "x-forwarded-for") continue;
    for (const v of [value].flat()) headers.append(name, v);
  }
  headers.set(VIA_HEADER, viaSoFar ? `${viaSoFar}, ${via}` : via);
  const forwardedFor = [req.headers["x-forwarded-for"]].flat().filter((v): v is string => typeof v === "string");
  headers.set("x-forwarded-for", [...forwardedFor, req.ip].join(","));
  let response: Response;
  try {
    response = await fetch(`${leaderUrl}${req.url}`, {
      method: req.method,
      headers,
      redirect: "manual",
      signal: AbortSignal.timeout(PROXY_TIMEOUT_MS),
      ...(typeof req.body === "string" && req.method !== "GET" && req.method !== "HEAD" ? { body: req.body } : {}),
    });
  } catch (err) {
    const error = err as Error & { cause?: { code?: string; message?: string } };
    if (error.name === "TimeoutError") return reply.code(504).send({ message: "Connection to leader timed out." });
    if (error.cause?.code === "ECONNREFUSED") return reply.code(502).send({ message: "Connection to leader refused." });
    return reply.code(502).send({ message: `Failed to successfully establish a connection to the leader: ${error.cause?.message ?? error.message}` });
  }
  // fetch hands the body over decoded: its encoding no longer applies.
  response.headers.forEach((value, name) => {
    if (!HOP_BY_HOP_HEADERS.has(name) && name !== "content-encoding") reply.header(name, value);
  });
  reply.header(VIA_HEADER, via);
  return reply.code(response.status).send(Buffer.from(await response.arrayBuffer()));
}

/** The version `/v2/info` reports: the Marathon API line it follows. */
export const MARATHON_VERSION = "1.11.0-corral";

/** An error answered with a status and Marathon's body. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
  ) {
    super(String(body.message ?? status));
  }
}

function flag(value: unknown, dflt: boolean): boolean {
  if (value === undefined || value === "") return value === "" ? true : dflt;
  return String(value).toLowerCase() === "true";
}

function query(req: FastifyRequest): Record<string, string | undefined> {
  const q = req.query as Record<string, unknown>;
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(q ?? {})) out[k] = Array.isArray(v) ? String(v[0]) : v === undefined ? undefined : String(v);
  return out;
}

/**
 * The shape of a task id: the app's part, a `.` (or the `_` of older Marathon ids), and a last
 * part free of both (Corral's ids are `<app path with '_'>.<uuid>`).
 */
const TASK_ID = /^(.+)[._]([^_.]+)$/;

/** What `GET /v2/tasks?status=` filters by: Marathon's running and staging, and two more states. */
const TASK_STATUSES = ["running", "staging", "killing", "unreachable"] as const;

/** The `scale`, `wipe` and `force` of a kill; Marathon refuses scale and wipe together. */
function killFlags(q: Record<string, string | undefined>): { scale: boolean; wipe: boolean; force: boolean } {
  const scale = flag(q.scale, false);
  const wipe = flag(q.wipe, false);
  if (scale && wipe) throw new HttpError(400, { message: "You cannot use scale and wipe at the same time." });
  return { scale, wipe, force: flag(q.force, false) };
}

function embeds(req: FastifyRequest): Set<string> {
  const q = (req.query as Record<string, unknown>)?.embed;
  const list = Array.isArray(q) ? q.map(String) : q === undefined ? [] : [String(q)];
  return new Set(list.flatMap((e) => e.split(",")));
}

/** Parses a body into JSON, or throws the 400/422 answer. */
function jsonBody(req: FastifyRequest): unknown {
  const text = typeof req.body === "string" ? req.body : "";
  const parsed = parseJsonBody(text);
  if (!parsed.ok) throw new HttpError(parsed.status, parsed.body as unknown as Record<string, unknown>);
  return parsed.value;
}

function fail(failure: ValidationFailure): never {
  throw new HttpError(failure.status, failure.body as unknown as Record<string, unknown>);
}

/**
 * The invalid id of a URL: nothing can exist there (404), but a request that would create
 * something there (`forWrite`) is told which rule the id breaks (422 at `/id`), as for a body id.
 */
function invalidUrlId(what: "App" | "Group", raw: string, errors: string[], forWrite: boolean): HttpError {
  if (forWrite) return new HttpError(422, { message: OBJECT_NOT_VALID, details: [{ path: "/id", errors }] });
  return new HttpError(404, { message: `${what} '/${raw}' does not exist` });
}

function appIdFrom(raw: string, forWrite: boolean): string {
  const resolved = resolvePathId(`/${raw}`, { checkReserved: false });
  if (!resolved.ok) throw invalidUrlId("App", raw, resolved.errors, forWrite);
  return resolved.id;
}

/** Splits `/v2/apps/<rest>` into the app id and the sub-resource (`rest` comes decoded from fastify). */
function appRoute(rest: string, forWrite = false): { appId: string; sub?: "restart" | "tasks" | "versions"; arg?: string } {
  const segments = rest.split("/").filter((s) => s !== "");
  const n = segments.length;
  if (n >= 2 && segments[n - 1] === "restart") return { appId: appIdFrom(segments.slice(0, -1).join("/"), false), sub: "restart" };
  if (n >= 2 && (segments[n - 1] === "tasks" || segments[n - 1] === "versions")) {
    return { appId: appIdFrom(segments.slice(0, -1).join("/"), false), sub: segments[n - 1] as "tasks" | "versions" };
  }
  if (n >= 3 && (segments[n - 2] === "tasks" || segments[n - 2] === "versions")) {
    return { appId: appIdFrom(segments.slice(0, -2).join("/"), false), sub: segments[n - 2] as "tasks" | "versions", arg: segments[n - 1]! };
  }
  return { appId: appIdFrom(segments.join("/"), forWrite) };
}

/**
 * Splits `/v2/groups/<rest>` into the group and what is asked of it: the group, its versions
 * (`<group>/versions`), or the group at a version (`<group>/versions/<version>`). As in Marathon,
 * a last segment `versions` always means the list, never a group of that name.
 */
function groupRoute(rest: string): { group: string; versions?: true; version?: string } {
  const segments = rest.split("/").filter((s) => s !== "");
  const n = segments.length;
  if (n >= 1 && segments[n - 1] === "versions") return { group: segments.slice(0, -1).join("/"), versions: true };
  if (n >= 2 && segments[n - 2] === "versions") return { group: segments.slice(0, -2).join("/"), version: segments[n - 1]! };
  return { group: segments.join("/") };
}

function unknownFieldsWarning(reply: FastifyReply, fields: readonly string[]): void {
  if (fields.length > 0) reply.header("Warning", `299 marathon "Unknown fields in the request, ignored: ${fields.join(", ").replace(/["\r\n]/g, "")}"`);
}

/** Routes registered on each server, as `"<METHOD> <url>"` (recorded by an onRoute hook). */
const routesOf = new WeakMap<FastifyInstance, string[]>();

/** The routes fastify registered on a server made by {@link createMarathonHttp}, as `"<METHOD> <url>"`. */
export function registeredRoutes(app: FastifyInstance): string[] {
  return [...(routesOf.get(app) ?? [])];
}

export function createMarathonHttp(deps: MarathonHttpDeps): FastifyInstance {
  const { core } = deps;
  // The leader names itself on every answer (errors included), as Marathon's leader proxy filter
  // does, so a client that reached a standby learns where to go directly next time.
  const nameLeader = (reply: FastifyReply) => {
    const { leading, selfUrl } = deps.leadership();
    if (leading) reply.header(LEADER_HEADER, trimUrl(selfUrl ?? deps.info().url));
  };
  const app = Fastify({
    logger: false,
    bodyLimit: deps.bodyLimitBytes ?? 1_048_576,
    // What fastify refuses before routing (a URL whose percent-encoding does not decode) gets
    // Marathon's `{message}` body like every other error, not fastify's own.
    frameworkErrors: (err, _req, reply: FastifyReply) => {
      nameLeader(reply);
      const status = typeof err.statusCode === "number" && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
      void reply.code(status).send({ message: err.code === "FST_ERR_BAD_URL" ? `Invalid URL: ${err.message}` : err.message });
    },
  });
  const routes: string[] = [];
  routesOf.set(app, routes);
  app.addHook("onRoute", (route) => {
    for (const method of [route.method].flat()) routes.push(`${method} ${route.url}`);
  });
  // Bodies are kept as text: parseJsonBody tells unparseable JSON (400) from bad shapes (422).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "string" }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err: unknown, _req, reply) => {
    if (err instanceof HttpError) return reply.code(err.status).send(err.body);
    if (err instanceof ConflictError) {
      return reply.code(409).send({ message: err.message, deployments: err.deploymentIds.map((id) => ({ id })) });
    }
    if (err instanceof NotFoundError) return reply.code(404).send({ message: err.message });
    if (err instanceof RefusedError) return reply.code(422).send({ message: err.message });
    const e = err as { statusCode?: number; message?: string };
    if (typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) return reply.code(e.statusCode).send({ message: e.message ?? "bad request" });
    deps.log.error({ err }, "marathon http: unexpected error");
    return reply.code(500).send({ message: "internal error" });
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ message: `Unknown resource ${req.method} ${req.url.split("?")[0]}` }));

  app.addHook("onRequest", async (_req, reply) => nameLeader(reply));

  // A standby serves no /v2 request itself: it forwards it to the leader, as Marathon does.
  app.addHook("preHandler", async (req, reply) => {
    const path = req.url.split("?")[0]!;
    if (!path.startsWith("/v2/") || path === "/v2/leader") return;
    const { leading, leaderUrl, selfUrl = deps.info().url } = deps.leadership();
    if (leading) return;
    if (leaderUrl === undefined || trimUrl(leaderUrl) === trimUrl(selfUrl)) return reply.code(503).send({ message: NO_LEADER_MESSAGE });
    if (path === "/v2/events") return reply.redirect(`${trimUrl(leaderUrl)}${req.url}`, 307);
    return forwardToLeader(req, reply, trimUrl(leaderUrl), `1.1 ${hostPort(selfUrl)}`);
  });

  const now = () => deps.clock.now();
  const requireApp = (appId: string): AppRecord => {
    const record = core.app(appId);
    if (!record) throw new HttpError(404, { message: `App '${appId}' does not exist` });
    return record;
  };
  const writeAnswer = (reply: FastifyReply, result: WriteResult, code = 200) =>
    reply.code(code).header(DEPLOYMENT_HEADER, result.deploymentId).send({ deploymentId: result.deploymentId, version: result.version });
  const apiPost = (req: FastifyRequest, appDefinition: NormalizedApp) =>
    deps.emit({ eventType: "api_post_event", timestamp: iso(now()), clientIp: req.ip, uri: req.url.split("?")[0]!, appDefinition });

  // ---- apps ---------------------------------------------------------------------------------

  app.post("/v2/apps", async (req, reply) => {
    const body = jsonBody(req);
    const result = validateApp(body, { defaultRole: "*" });
    if (!result.ok) fail(result);
    const q = query(req);
    // Checked inside the input: a create queued behind other writes must see the ones before it.
    const { result: write } = await deps.input(() => {
      if (core.app(result.app.id)) throw new HttpError(409, { message: `An app with id [${result.app.id}] already exists.` });
      return core.putApp(result.app, { force: flag(q.force, false) }, now());
    });
    apiPost(req, result.app);
    unknownFieldsWarning(reply, result.unknownFields);
    const record = requireApp(result.app.id);
    return reply
      .code(201)
      .header("Location", `${deps.info().url}/v2/apps${result.app.id}`)
      .header(DEPLOYMENT_HEADER, write.deploymentId)
      .send({ ...appJson(core, record, new Set()), tasksStaged: 0, tasksRunning: 0, tasksHealthy: 0, tasksUnhealthy: 0, deployments: [{ id: write.deploymentId }] });
  });

  const answerBuffer = new ReusableBuffer();
  app.get("/v2/apps", async (req, reply) => {
    const q = query(req);
    const embed = embeds(req);
    const selector = q.label !== undefined ? parseLabelSelector(q.label) : undefined;
    if (selector?.ok === false) throw new HttpError(400, { message: `Invalid label selector (query parameter label): ${selector.error}` });
    const label = selector?.matches;
    const apps = core.appList().filter((r) => {
      if (q.id !== undefined && !r.app.id.toLowerCase().includes(q.id.toLowerCase())) return false;
      if (q.cmd !== undefined && !(r.app.cmd ?? "").includes(q.cmd)) return false;
      if (label && !label(r.app.labels)) return false;
      return true;
    });
    const body = appsJsonBytes(core, apps, embed, "apps.", (size) => {
      const lent = answerBuffer.lend(size);
      reply.raw.once("finish", lent.giveBack); // written out: the buffer may serve the next answer
      return lent.buffer;
    });
    return reply.type("application/json; charset=utf-8").send(body);
  });

  app.get("/v2/apps/*", async (req) => {
    const route = appRoute((req.params as { "*": string })["*"]);
    const record = requireApp(route.appId);
    if (route.sub === "tasks") {
      if (route.arg !== undefined) {
        const instance = core.instance(route.arg);
        if (!instance || instance.appId !== route.appId) throw new HttpError(404, { message: `Task '${route.arg}' does not exist` });
        return { task: taskJson(core, instance) };
      }
      return { tasks: core.instancesOf(route.appId).map((i) => taskJson(core, i)) };
    }
    if (route.sub === "versions") {
      if (route.arg !== undefined) {
        const found = record.versions.find((v) => v.version === route.arg);
        if (!found) throw new HttpError(404, { message: `App '${route.appId}' does not exist in version ${route.arg}` });
        return { ...found.app, version: found.version, versionInfo: found.versionInfo };
      }
      return { versions: record.versions.map((v) => v.version).reverse() };
    }
    if (route.sub === "restart") throw new HttpError(405, { message: "Use POST to restart an app" });
    return { app: appJson(core, record, new Set(["tasks", "deployments", "lastTaskFailure", "readiness", ...embeds(req)]), "app.") };
  });

  const putOrPatch = (partialDefault: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    // PUT may create the app: an invalid id in its URL is a broken rule, not a missing app.
    const route = appRoute((req.params as { "*": string })["*"], req.method === "PUT");
    if (route.sub !== undefined) throw new HttpError(405, { message: `${req.method} is not supported here` });
    const q = query(req);
    const force = flag(q.force, false);
    const body = jsonBody(req);
    const partial = req.method === "PATCH" || flag(q.partialUpdate, partialDefault);
    // The app is read, merged and written inside one input: an update queued behind others
    // applies to the app as they left it, and loses none of their changes.
    const { result, validated, created } = await deps.input(() => {
      // PUT creates an app it does not find; PATCH only changes one (Marathon answers 404).
      const existing = req.method === "PATCH" ? requireApp(route.appId) : core.app(route.appId);
      if (isRollbackRequest(body)) {
        if (!existing) throw new HttpError(404, { message: `App '${route.appId}' does not exist` });
        const found = existing.versions.find((v) => v.version === body.version);
        if (!found) throw new HttpError(404, { message: `App '${route.appId}' does not exist in version ${body.version}` });
        return { ...core.putApp(found.app, { force }, now()), validated: undefined, created: false };
      }
      const validated = existing && partial ? validateAppUpdate(existing.app, body, { defaultRole: "*" }) : validateApp(body, { pathId: route.appId, defaultRole: "*" });
      if (!validated.ok) fail(validated);
      if (validated.app.id !== route.appId) throw new HttpError(422, { message: "Object is not valid", details: [{ path: "/id", errors: ["the id in the body does not match the URL"] }] });
      return { ...core.putApp(validated.app, { force }, now()), validated, created: existing === undefined };
    });
    if (validated === undefined) return writeAnswer(reply, result);
    apiPost(req, validated.app);
    unknownFieldsWarning(reply, validated.unknownFields);
    return writeAnswer(reply, result, created ? 201 : 200);
  };
  app.put("/v2/apps/*", putOrPatch(true));
  app.patch("/v2/apps/*", putOrPatch(true));

  /**
   * Marathon's batch update: a list of apps, each created (PUT only) or changed as `PUT`/`PATCH
   * /v2/apps/{id}` would, all in one deployment. The errors of every app are answered at once,
   * their paths behind the app's index (`/(1)/instances`); PATCH of an unknown id is 404. Nothing
   * is applied unless every app is valid. An id listed twice gets its changes in order.
   */
  const putOrPatchMany = async (req: FastifyRequest, reply: FastifyReply) => {
    const q = query(req);
    const force = flag(q.force, false);
    const partial = req.method === "PATCH" || flag(q.partialUpdate, true);
    const body = jsonBody(req);
    if (!Array.isArray(body)) throw new HttpError(422, { message: INVALID_JSON, details: [{ path: "/", errors: ["error.expected.jsarray: a list of apps"] }] });
    // Read, merged and written in one input, as for a single app.
    const { result, apps, unknownFields } = await deps.input(() => {
      const apps = new Map<string, NormalizedApp>();
      const details: ErrorDetail[] = [];
      const unknownFields: string[] = [];
      let message = OBJECT_NOT_VALID;
      body.forEach((item: unknown, i) => {
        const at = (path: string) => `/(${i})${path === "/" ? "" : path}`;
        const rawId = isJsonObject(item) ? item.id : undefined;
        const resolved = typeof rawId === "string" ? resolvePathId(rawId) : undefined;
        const id = resolved?.ok ? resolved.id : undefined;
        const existing = id === undefined ? undefined : (apps.get(id) ?? core.app(id)?.app);
        if (id !== undefined && existing === undefined && req.method === "PATCH") throw new HttpError(404, { message: `App '${id}' does not exist` });
        if (id !== undefined && isRollbackRequest(item)) {
          const found = core.app(id)?.versions.find((v) => v.version === item.version);
          if (!found) throw new HttpError(404, { message: `App '${id}' does not exist in version ${item.version}` });
          apps.set(id, found.app);
          return;
        }
        const validated = existing && partial ? validateAppUpdate(existing, item, { defaultRole: "*" }) : validateApp(item, { defaultRole: "*" });
        if (!validated.ok) {
          if (details.length === 0) message = validated.body.message;
          for (const d of validated.body.details ?? []) details.push({ path: at(d.path), errors: d.errors });
          return;
        }
        apps.set(validated.app.id, validated.app);
        unknownFields.push(...validated.unknownFields.map(at));
      });
      if (details.length > 0) throw new HttpError(422, { message, details });
      return { ...core.deploy([...apps.values()].map((a) => ({ app: a })), { force }, now()), apps: [...apps.values()], unknownFields };
    });
    for (const a of apps) apiPost(req, a);
    unknownFieldsWarning(reply, unknownFields);
    return writeAnswer(reply, result);
  };
  app.put("/v2/apps", putOrPatchMany);
  app.patch("/v2/apps", putOrPatchMany);

  app.post("/v2/apps/*", async (req, reply) => {
    const route = appRoute((req.params as { "*": string })["*"]);
    if (route.sub !== "restart") throw new HttpError(405, { message: "POST is only supported on /v2/apps and /v2/apps/{id}/restart" });
    const force = flag(query(req).force, false);
    // The app is read inside the input: a restart queued behind an update restarts the app as
    // updated, and does not put the definition from before it back.
    const { result } = await deps.input(() => core.putApp(requireApp(route.appId).app, { force, restart: true }, now()));
    return writeAnswer(reply, result);
  });

  app.delete("/v2/apps/*", async (req, reply) => {
    const route = appRoute((req.params as { "*": string })["*"]);
    const q = query(req);
    requireApp(route.appId);
    if (route.sub === undefined) {
      const { result } = await deps.input(() => core.deleteApp(route.appId, { force: flag(q.force, true) }, now()));
      return writeAnswer(reply, result);
    }
    if (route.sub !== "tasks") throw new HttpError(405, { message: `DELETE is not supported on ${route.sub}` });
    const killOptions = killFlags(q);
    let targets = core.instancesOf(route.appId);
    if (route.arg !== undefined) {
      targets = targets.filter((i) => i.id === route.arg);
      if (targets.length === 0) throw new HttpError(404, { message: `Task '${route.arg}' does not exist` });
    }
    if (q.host !== undefined) targets = targets.filter((i) => i.hostname === q.host);
    const snapshot = targets.map((i) => taskJson(core, i));
    const out = await deps.input(() => core.killInstances(targets.map((i) => i.id), killOptions, now()));
    if (out.result) return writeAnswer(reply, out.result);
    return route.arg !== undefined ? { task: snapshot[0] } : { tasks: snapshot };
  });

  // ---- tasks --------------------------------------------------------------------------------

  app.get("/v2/tasks", async (req) => {
    // `status` and Marathon's `status[]`, each perhaps repeated: a task in any of them is shown.
    const raw = req.query as Record<string, unknown>;
    const wanted = [raw.status, raw["status[]"]].flat().filter((s) => s !== undefined).map((s) => String(s).toLowerCase());
    // Marathon ignores a status it does not know (and then lists every task): a typo would go
    // unnoticed, so it is refused here.
    const unknown = wanted.find((s) => !(TASK_STATUSES as readonly string[]).includes(s));
    if (unknown !== undefined) throw new HttpError(400, { message: `Invalid status '${unknown}' (query parameter status): one of ${TASK_STATUSES.join(", ")}` });
    const byStatus = (i: Instance) =>
      wanted.length === 0 ||
      (wanted.includes("running") && i.state === "running") ||
      (wanted.includes("staging") && (i.state === "staging" || i.state === "starting")) ||
      (wanted.includes("killing") && i.state === "killing") ||
      (wanted.includes("unreachable") && i.state === "unreachable");
    return { tasks: core.allInstances().filter(byStatus).map((i) => taskJson(core, i)) };
  });

  app.post("/v2/tasks/delete", async (req, reply) => {
    const body = jsonBody(req);
    if (!isJsonObject(body) || !Array.isArray(body.ids) || !body.ids.every((id) => typeof id === "string")) {
      throw new HttpError(422, { message: "Invalid JSON", details: [{ path: "/ids", errors: ["error.expected.jsarray of strings"] }] });
    }
    const killOptions = killFlags(query(req));
    const ids = body.ids as string[];
    // As Marathon: an id that cannot name a task of any app is refused; a well-formed one that
    // names no task now is passed over.
    const malformed = ids.find((id) => !TASK_ID.test(id));
    if (malformed !== undefined) throw new HttpError(400, { message: `Invalid task id '${malformed}'.` });
    const out = await deps.input(() => core.killInstances(ids, killOptions, now()));
    if (out.result) return writeAnswer(reply, out.result);
    return { tasks: out.killed.map((i) => taskJson(core, i)) };
  });

  // ---- deployments and queue -----------------------------------------------------------------

  app.get("/v2/deployments", async () => core.deploymentList().map((d) => core.deploymentJson(d)));

  app.delete("/v2/deployments/:id", async (req, reply) => {
    const { id } = req.params as { id: string };
    const force = flag(query(req).force, false);
    if (!core.deployment(id)) throw new HttpError(404, { message: `DeploymentPlan ${id} does not exist` });
    const out = await deps.input(() => core.cancelDeployment(id, { force }, now()));
    if (force || !out.result) return reply.code(202).send();
    return writeAnswer(reply, out.result);
  });

  app.get("/v2/queue", async () => {
    const t = now();
    return {
      queue: core.queue(t).map((q) => ({
        app: appJson(core, q.record, new Set()),
        count: q.count,
        delay: q.delay,
        since: iso(q.since),
        role: q.record.app.role,
        processedOffersSummary: {
          processedOffersCount: q.stats.processed,
          unusedOffersCount: q.stats.unused,
          ...(q.stats.lastUnusedAtMs !== undefined ? { lastUnusedOfferAt: iso(q.stats.lastUnusedAtMs) } : {}),
          ...(q.stats.lastUsedAtMs !== undefined ? { lastUsedOfferAt: iso(q.stats.lastUsedAtMs) } : {}),
          rejectSummaryLastOffers: [...q.stats.reasons].map(([reason, declined]) => ({ reason, declined, processed: q.stats.processed })),
        },
        lastUnusedOffers: q.stats.lastUnused.map((u) => ({
          offer: { id: u.offerId, agentId: u.agentId, hostname: u.hostname },
          timestamp: iso(u.timestampMs),
          reason: [u.reason],
          detail: u.detail,
        })),
      })),
    };
  });

  app.delete("/v2/queue/*", async (req, reply) => {
    const rest = (req.params as { "*": string })["*"];
    if (!rest.endsWith("/delay")) throw new HttpError(404, { message: "Unknown resource" });
    const appId = appIdFrom(rest.slice(0, -"/delay".length), false);
    await deps.input(() => core.resetDelay(appId, now()));
    return reply.code(204).send();
  });

  // ---- groups (created through /v2/groups, or implied by app ids) ----------------------------

  const groupIdFrom = (rest: string, forWrite = false): string => {
    if (rest.split("/").filter((x) => x !== "").length === 0) return "/";
    const resolved = resolvePathId(`/${rest}`, { checkReserved: false });
    if (!resolved.ok) throw invalidUrlId("Group", rest, resolved.errors, forWrite);
    return resolved.id;
  };
  const appsUnder = (groupId: string) => core.appList().filter((r) => isSelfOrAncestorId(groupId, r.app.id) && r.app.id !== groupId);
  const flatten = (group: NormalizedGroup): NormalizedApp[] => [...group.apps, ...group.groups.flatMap(flatten)];
  /** Every group of a body, the body's own included, as records to keep. */
  const groupsOf = (group: NormalizedGroup): Array<{ id: string; dependencies: string[] }> => [{ id: group.id, dependencies: group.dependencies }, ...group.groups.flatMap(groupsOf)];
  const requireGroup = (id: string) => {
    if (!core.groupExists(id)) throw new HttpError(404, { message: `Group '${id}' does not exist` });
  };

  app.get("/v2/groups", async (req) => groupJson(core, "/", embeds(req)));
  app.get("/v2/groups/*", async (req) => {
    const route = groupRoute((req.params as { "*": string })["*"]);
    const id = groupIdFrom(route.group);
    if (route.version !== undefined) {
      const then = core.rootAt(route.version);
      if (!then || !core.groupVersions(id).includes(route.version)) throw new HttpError(404, { message: `Group '${id}' does not exist in version ${route.version}` });
      return groupVersionJson(then, id);
    }
    requireGroup(id);
    // Marathon answers the list of versions bare, not as {versions: [...]} like an app's.
    if (route.versions) return core.groupVersions(id);
    return groupJson(core, id, embeds(req));
  });

  app.post("/v2/groups", async (req, reply) => {
    const body = jsonBody(req);
    const validated = validateGroup(body, { defaultRole: "*" });
    if (!validated.ok) fail(validated);
    const group = validated.group;
    const apps = flatten(group);
    // Checked inside the input, as for POST /v2/apps.
    const { result } = await deps.input(() => {
      if (group.id !== "/" && core.groupExists(group.id)) throw new HttpError(409, { message: `Group ${group.id} is already created. Use PUT to change this group.` });
      const existing = apps.filter((a) => core.app(a.id)).map((a) => a.id);
      if (existing.length > 0) throw new HttpError(409, { message: `An app with id [${existing[0]}] already exists.` });
      return core.deploy(apps.map((a) => ({ app: a })), { force: flag(query(req).force, false) }, now(), { put: groupsOf(group) });
    });
    unknownFieldsWarning(reply, validated.unknownFields);
    return reply.code(201).header("Location", `${deps.info().url}/v2/groups${group.id}`).header(DEPLOYMENT_HEADER, result.deploymentId).send(result);
  });

  /**
   * Deploys the changes of a group write, or with `dryRun` answers the steps it would take
   * (Marathon's `{"steps": [...]}`) and changes nothing. The changes are worked out inside the
   * input, so that they are computed against the state they are applied to.
   */
  const deployGroupWrite = async (reply: FastifyReply, dryRun: boolean, force: boolean, plan: () => { changes: readonly AppChange[]; groups?: GroupChanges }) => {
    if (dryRun) {
      const { changes, groups } = plan();
      return reply.code(200).send({ steps: core.planSteps(changes, groups) });
    }
    const { result } = await deps.input(() => {
      const { changes, groups } = plan();
      return core.deploy(changes, { force }, now(), groups);
    });
    return writeAnswer(reply, result);
  };

  const putGroup = async (req: FastifyRequest, reply: FastifyReply) => {
    const id = groupIdFrom((req.params as { "*"?: string })["*"] ?? "", true);
    const body = jsonBody(req);
    const q = query(req);
    const force = flag(q.force, false);
    const dryRun = flag(q.dryRun, false);
    if (isJsonObject(body) && typeof body.scaleBy === "number" && body.apps === undefined && body.groups === undefined && body.version === undefined) {
      const factor = body.scaleBy;
      if (!(factor >= 0) || !Number.isFinite(factor)) throw new HttpError(422, { message: "Object is not valid", details: [{ path: "/scaleBy", errors: ["must be a finite number >= 0"] }] });
      requireGroup(id);
      return deployGroupWrite(reply, dryRun, force, () => ({ changes: appsUnder(id).map((r) => ({ app: { ...r.app, instances: Math.ceil(r.app.instances * factor) } })) }));
    }
    const validated = validateGroup(body, { pathId: id, defaultRole: "*" });
    if (!validated.ok) fail(validated);
    const group = validated.group;
    if (group.version !== undefined) {
      const version = group.version;
      return deployGroupWrite(reply, dryRun, force, () => core.groupRollback(group.id, version));
    }
    const apps = flatten(group);
    const replacesChildren = isJsonObject(body) && (body.apps !== undefined || body.groups !== undefined);
    const kept = new Set(apps.map((a) => a.id));
    const [, ...nested] = groupsOf(group);
    unknownFieldsWarning(reply, validated.unknownFields);
    // The apps to remove and the dependencies to keep are read in the plan, so inside the input:
    // a write queued before this one is seen, not undone.
    return deployGroupWrite(reply, dryRun, force, () => {
      const removals = replacesChildren ? appsUnder(group.id).filter((r) => !kept.has(r.app.id)).map((r) => ({ remove: r.app.id })) : [];
      // The group itself keeps its dependencies unless the body gives them; its subgroups are
      // replaced along with its apps.
      const dependencies = isJsonObject(body) && body.dependencies !== undefined ? group.dependencies : (core.groupRecord(group.id)?.dependencies ?? []);
      const groups = replacesChildren ? { remove: [group.id], put: [{ id: group.id, dependencies }, ...nested] } : { put: [{ id: group.id, dependencies }] };
      return { changes: [...removals, ...apps.map((a) => ({ app: a }))], groups };
    });
  };
  app.put("/v2/groups", putGroup);
  app.put("/v2/groups/*", putGroup);

  app.delete("/v2/groups/*", async (req, reply) => {
    const id = groupIdFrom((req.params as { "*": string })["*"]);
    const force = flag(query(req).force, false);
    // The group and its apps are read inside the input: an app a write queued before this one
    // creates in the group goes with it.
    const { result } = await deps.input(() => {
      requireGroup(id);
      return core.deploy(appsUnder(id).map((r) => ({ remove: r.app.id })), { force }, now(), { remove: [id] });
    });
    return writeAnswer(reply, result);
  });

  // ---- info, events, metrics -----------------------------------------------------------------

  app.get("/v2/info", async () => {
    const info = deps.info();
    const host = info.url.replace(/^https?:\/\//, "");
    return {
      name: "marathon",
      version: MARATHON_VERSION,
      buildref: "corral",
      elected: deps.leadership().leading,
      leader: deps.leadership().leaderUrl?.replace(/^https?:\/\//, "") ?? null,
      frameworkId: info.frameworkId ?? null,
      marathon_config: { framework_name: info.frameworkName, mesos_role: info.role, master: `nats (cluster ${info.cluster})`, failover_timeout: 604800, task_launch_timeout: core.config.taskLaunchTimeoutMs, max_instances_per_offer: core.config.maxInstancesPerOffer, decline_offer_duration: core.config.idleDeclineRefuseSeconds * 1000 },
      http_config: { http_port: Number(host.split(":").pop()) },
      event_subscriber: { type: "http_callback" },
    };
  });
  app.get("/v2/leader", async (_req, reply) => {
    const url = deps.leadership().leaderUrl;
    if (url === undefined) return reply.code(404).send({ message: "There is no leader" });
    return { leader: url.replace(/^https?:\/\//, "") };
  });
  app.get("/ping", async (_req, reply) => reply.type("text/plain").send("pong"));
  app.get("/openapi.json", async () => marathonOpenApi(MARATHON_VERSION));
  app.get("/metrics", async (_req, reply) => reply.type("text/plain; version=0.0.4").send(deps.metrics()));

  const streams = new Set<ServerResponse>();
  // Event streams never end on their own: end them so that close() does not wait for clients.
  app.addHook("preClose", (done) => {
    for (const raw of streams) raw.end();
    done();
  });
  app.get("/v2/events", (req, reply) => {
    if (streams.size >= (deps.maxEventStreams ?? 256)) {
      void reply.code(503).send({ message: "too many event streams" });
      return;
    }
    const q = req.query as Record<string, unknown>;
    const filter = q.event_type === undefined ? undefined : new Set((Array.isArray(q.event_type) ? q.event_type : [q.event_type]).map(String));
    reply.hijack();
    const raw = reply.raw;
    streams.add(raw);
    raw.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache", Connection: "keep-alive" });
    raw.write(`event: event_stream_attached\ndata: ${JSON.stringify({ remoteAddress: req.ip, eventType: "event_stream_attached", timestamp: iso(now()) })}\n\n`);
    const unsubscribe = deps.onEvent((event) => {
      if (filter && !filter.has(event.eventType)) return;
      raw.write(`event: ${event.eventType}\ndata: ${JSON.stringify(event)}\n\n`);
    });
    raw.on("close", () => {
      streams.delete(raw);
      unsubscribe();
    });
  });

  return app;
}

// ------------------------------------------------------------------------------------------------
// JSON shapes
// ------------------------------------------------------------------------------------------------

/** One test of a label selector: the label must exist and its value pass `test`. */
interface LabelTest {
  key: string;
  test: (value: string) => boolean;
}

/**
 * Parses Marathon's label selector query: comma-separated selectors that must all hold, each
 * `k` (exists), `k==v`, `k!=v`, `k in (v1, v2)` or `k notin (v1, v2)`; every one of them needs
 * the label to exist. Names and values are made of `A-Za-z0-9`, `-`, `_` and `.`; any other
 * character is written with a backslash before it. Blanks between the parts are allowed.
 * @returns the selector, or why the text is not one
 */
export function parseLabelSelector(text: string): { ok: true; matches: (labels: Record<string, string>) => boolean } | { ok: false; error: string } {
  let at = 0;
  const blanks = () => {
    while (at < text.length && /\s/.test(text[at]!)) at++;
  };
  const term = (): string | undefined => {
    blanks();
    let out = "";
    while (at < text.length) {
      const c = text[at]!;
      if (c === "\\" && at + 1 < text.length) {
        out += text[at + 1];
        at += 2;
      } else if (/[-A-Za-z0-9_.]/.test(c)) {
        out += c;
        at++;
      } else break;
    }
    return out === "" ? undefined : out;
  };
  const take = (token: string): boolean => {
    blanks();
    if (!text.startsWith(token, at)) return false;
    at += token.length;
    return true;
  };
  const expected = (what: string) => ({ ok: false as const, error: `expected ${what} at character ${at + 1}` });
  const tests: LabelTest[] = [];
  blanks();
  while (at < text.length) {
    const key = term();
    if (key === undefined) return expected("a label name");
    if (take("==") || take("!=")) {
      const equal = text.slice(at - 2, at) === "==";
      const value = term();
      if (value === undefined) return expected("a label value");
      tests.push({ key, test: (v) => (v === value) === equal });
    } else {
      const start = at;
      blanks();
      const op = /^(notin|in)(?![-A-Za-z0-9_.\\])/.exec(text.slice(at))?.[1];
      if (op !== undefined) {
        at += op.length;
        if (!take("(")) return expected("'(' after " + op);
        const values: string[] = [];
        do {
          const value = term();
          if (value === undefined) return expected("a label value");
          values.push(value);
        } while (take(","));
        if (!take(")")) return expected("')'");
        const inSet = op === "in";
        tests.push({ key, test: (v) => values.includes(v) === inSet });
      } else {
        at = start;
        tests.push({ key, test: () => true });
      }
    }
    blanks();
    if (at < text.length && !take(",")) return expected("',' between selectors");
  }
  return { ok: true, matches: (labels) => tests.every((t) => Object.hasOwn(labels, t.key) && t.test(labels[t.key]!)) };
}

/**
 * A group as `/v2/groups` shows it: its apps and its groups (with records or implied by ids);
 * `embed` adds to its apps what `group.apps.tasks` and the like name.
 */
export function groupJson(core: MarathonCore, id: string, embed: ReadonlySet<string> = new Set()): Record<string, unknown> {
  const depth = pathSegments(id).length;
  const direct = core.appList().filter((r) => isSelfOrAncestorId(id, r.app.id) && pathSegments(r.app.id).length === depth + 1);
  const groups = core.childGroups(id).map((child) => groupJson(core, child, embed));
  const record = core.groupRecord(id);
  const versions = [...direct.map((r) => r.version), ...groups.flatMap((g) => (typeof g.version === "string" ? [g.version] : [])), ...(record ? [record.version] : [])].sort();
  return {
    id,
    apps: direct.map((r) => appJson(core, r, embed, "group.apps.")),
    groups,
    pods: [],
    dependencies: record?.dependencies ?? [],
    ...(versions.length > 0 ? { version: versions[versions.length - 1] } : {}),
  };
}

/**
 * A group as it was at a version of the root group (`GET /v2/groups/{id}/versions/{version}`):
 * the definitions of its apps then (without tasks: those are of now) and its groups then.
 */
export function groupVersionJson(then: RootGroupSnapshot, id: string): Record<string, unknown> {
  const depth = pathSegments(id).length;
  const direct = [...then.apps.values()].filter((v) => isSelfOrAncestorId(id, v.app.id) && pathSegments(v.app.id).length === depth + 1).sort((a, b) => (a.app.id < b.app.id ? -1 : 1));
  return {
    id,
    apps: direct.map((v) => ({ ...v.app, version: v.version, versionInfo: v.versionInfo })),
    groups: treeChildGroups(id, then.groups.keys(), then.apps.keys()).map((child) => groupVersionJson(then, child)),
    pods: [],
    dependencies: then.groups.get(id)?.dependencies ?? [],
    version: then.version,
  };
}

/** An app as `/v2/apps` shows it; `embed` names what to add (tasks, deployments...). */
export function appJson(core: MarathonCore, record: AppRecord, embed: ReadonlySet<string>, prefix = ""): Record<string, unknown> {
  return { ...record.app, version: record.version, versionInfo: record.versionInfo, ...appStatusJson(core, record, embed, prefix) };
}

/**
 * One buffer lent to one answer at a time, and given back once the answer is written out. A
 * fresh megabyte-sized buffer per `GET /v2/apps` costs the process several times the work of
 * filling it (the memory is mapped, zeroed by the system and unmapped again each time); one
 * kept buffer does not. Its size is bounded by the largest answer (so by `maxApps`).
 */
class ReusableBuffer {
  private spare: Buffer | undefined;

  /** `size` bytes, and the function to call once nothing reads them any more (not calling it just loses the reuse). */
  lend(size: number): { buffer: Buffer; giveBack: () => void } {
    let whole = this.spare;
    if (whole !== undefined && whole.length >= size) this.spare = undefined;
    else whole = Buffer.allocUnsafe(Math.ceil(size * 1.25)); // room to grow before the next allocation
    const lent = whole;
    return {
      buffer: lent.subarray(0, size),
      giveBack: () => {
        if (this.spare === undefined || this.spare.length < lent.length) this.spare = lent;
      },
    };
  }
}

const APPS_OPEN = Buffer.from('{"apps":[');
const APPS_CLOSE = Buffer.from("]}");

/** UTF-8 JSON of an app's definition (`{...app, version, versionInfo}` without its closing brace), by record. */
const definitionBytes = new WeakMap<AppRecord, Buffer>();

/**
 * `{"apps": [...]}` of {@link appJson}s as UTF-8 JSON, for thousands of apps: each definition is
 * serialized once per record (the core replaces an app's record on every write and never changes
 * one), only the rest of each app per call, and the answer is built as bytes (a megabyte-long
 * string costs more to measure and encode than to copy) in a buffer from `allocate`.
 */
export function appsJsonBytes(core: MarathonCore, records: readonly AppRecord[], embed: Set<string>, prefix = "", allocate: (size: number) => Buffer = Buffer.allocUnsafe): Buffer {
  const definitions = records.map((record) => {
    let definition = definitionBytes.get(record);
    if (definition === undefined) {
      definition = Buffer.from(JSON.stringify({ ...record.app, version: record.version, versionInfo: record.versionInfo }).slice(0, -1));
      definitionBytes.set(record, definition);
    }
    return definition;
  });
  const rests = records.map((record) => appStatusText(core, record, embed, prefix));
  let size = APPS_OPEN.length + APPS_CLOSE.length + Math.max(0, records.length - 1);
  for (let i = 0; i < records.length; i++) size += definitions[i]!.length + Buffer.byteLength(rests[i]!);
  const out = allocate(size);
  out.set(APPS_OPEN, 0);
  let at = APPS_OPEN.length;
  for (let i = 0; i < records.length; i++) {
    if (i > 0) out[at++] = 0x2c; // ","
    out.set(definitions[i]!, at); // set, not copy(): a plain memcpy
    at += definitions[i]!.length;
    at += out.write(rests[i]!, at);
  }
  out.set(APPS_CLOSE, at);
  return out;
}

/** What follows an app's definition in its JSON: `,<the fields of appStatusJson>}`. */
function appStatusText(core: MarathonCore, record: AppRecord, embed: Set<string>, prefix: string): string {
  if (embed.size === 0) {
    // Nothing embedded (the usual listing): written directly, as appStatusJson would have it.
    const c = core.taskCounts(record.app.id);
    const deployment = core.deploymentOf(record.app.id);
    const deployments = deployment ? `{"id":${JSON.stringify(deployment.id)}}` : "";
    return `,"tasksStaged":${c.tasksStaged},"tasksRunning":${c.tasksRunning},"tasksHealthy":${c.tasksHealthy},"tasksUnhealthy":${c.tasksUnhealthy},"deployments":[${deployments}]}`;
  }
  const status = JSON.stringify(appStatusJson(core, record, embed, prefix));
  return status === "{}" ? "}" : `,${status.slice(1)}`;
}

/**
 * What {@link appJson} adds to the definition: task counts, deployments and the embedded parts.
 * (appStatusText writes the same without embedded parts directly: keep the two in step; a test
 * compares `GET /v2/apps` with appJson.)
 */
function appStatusJson(core: MarathonCore, record: AppRecord, embed: ReadonlySet<string>, prefix: string): Record<string, unknown> {
  const named = (what: string) => embed.has(what) || embed.has(`${prefix}${what}`);
  // Marathon's deprecated `failures` stands for tasks, lastTaskFailure, counts and deployments.
  const has = (what: string) => named(what) || ((what === "tasks" || what === "lastTaskFailure") && named("failures"));
  const deployment = core.deploymentOf(record.app.id);
  const out: Record<string, unknown> = {
    ...core.taskCounts(record.app.id),
    deployments: deployment ? [{ id: deployment.id }] : [],
  };
  if (has("tasks")) out.tasks = core.instancesOf(record.app.id).map((i) => taskJson(core, i));
  if (has("readiness")) out.readinessCheckResults = core.readinessResults(record.app.id);
  const failure = has("lastTaskFailure") ? core.lastTaskFailure(record.app.id) : undefined;
  if (failure) out.lastTaskFailure = failure;
  return out;
}

/** A task as `/v2/tasks` shows it. */
export function taskJson(core: MarathonCore, i: Instance): Record<string, unknown> {
  // Results are shown for the checks of the instance's own version that run (MESOS_* ones do not).
  const checked = core.isHealthChecked(i);
  return {
    id: i.id,
    appId: i.appId,
    host: i.hostname,
    slaveId: i.agentId,
    ports: i.hostPorts,
    servicePorts: [],
    ipAddresses: [],
    stagedAt: iso(i.stagedAtMs),
    ...(i.startedAtMs !== undefined ? { startedAt: iso(i.startedAtMs) } : {}),
    version: i.version,
    state: i.mesosState,
    ...(checked ? { healthCheckResults: i.healthy === undefined ? [] : [{ alive: i.healthy, taskId: i.id, instanceId: i.id }] } : {}),
  };
}
