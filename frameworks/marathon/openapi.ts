/**
 * The OpenAPI 3 description of Marathon's REST API as Corral implements it (`GET /openapi.json`).
 *
 * Every operation names the fastify route that serves it (`x-corral-route`, e.g.
 * `"GET /v2/apps/*"`): one wildcard route serves several documented paths (an app id may contain
 * slashes, so `/v2/apps/*` is `/v2/apps/{appId}`, `/v2/apps/{appId}/tasks`, ...). The tests compare
 * these names with the routes fastify reports through its `onRoute` hook, both ways, so a route
 * added without documentation (or documentation left behind by a removed route) fails them.
 *
 * Request bodies reuse the app and group JSON schemas of `app-schema.ts`, rewritten into OpenAPI
 * 3.0's dialect of JSON Schema by {@link toOpenApiSchema}.
 *
 * @module
 */

import { APP_SCHEMA, GROUP_SCHEMA, type JsonSchema } from "./app-schema.ts";

/** The OpenAPI version of the document. */
export const OPENAPI_VERSION = "3.0.3";

/** A JSON object of an OpenAPI document (kept loose: it is data for clients). */
export type OpenApiObject = { [key: string]: unknown };

/** The document served at `/openapi.json`. */
export interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string; description: string };
  paths: Record<string, Record<string, OpenApiObject>>;
  components: { schemas: Record<string, OpenApiObject> };
}

/** The vendor field naming the fastify route (`"<METHOD> <url>"`) that serves an operation. */
export const ROUTE_FIELD = "x-corral-route";

// ------------------------------------------------------------------------------------------------
// JSON schema -> OpenAPI 3.0 schema
// ------------------------------------------------------------------------------------------------

const OBJECT_KEYWORDS = ["properties", "additionalProperties", "required"];
const ARRAY_KEYWORDS = ["items"];

/**
 * Rewrites an ajv (draft-07) schema into an OpenAPI 3.0 schema object: `$id` and `definitions`
 * go, `$ref: "#/definitions/<name>"` points at `#/components/schemas/<refs[name]>`, and a list of
 * types (`["string", "object"]`, which 3.0 cannot say) becomes an `anyOf` with the object and array
 * keywords moved into their branch. `nullable` is 3.0's own keyword and stays (on every branch:
 * 3.0 gives it a meaning only next to a `type`).
 */
export function toOpenApiSchema(schema: JsonSchema, refs: Readonly<Record<string, string>> = {}): OpenApiObject {
  const out: OpenApiObject = {};
  for (const [keyword, value] of Object.entries(schema)) {
    if (keyword === "$id" || keyword === "definitions") continue;
    if (keyword === "$ref" && typeof value === "string") {
      const name = value.replace(/^#\/definitions\//, "");
      return { $ref: `#/components/schemas/${refs[name] ?? name}` };
    }
    if (keyword === "properties" && isPlainObject(value)) {
      out.properties = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toOpenApiSchema(v as JsonSchema, refs)]));
    } else if ((keyword === "items" || keyword === "additionalProperties") && isPlainObject(value)) {
      out[keyword] = toOpenApiSchema(value as JsonSchema, refs);
    } else {
      out[keyword] = value;
    }
  }
  if (!Array.isArray(out.type)) return out;
  const types = out.type as string[];
  const shared: OpenApiObject = {};
  const branchKeywords = [...OBJECT_KEYWORDS, ...ARRAY_KEYWORDS];
  for (const [k, v] of Object.entries(out)) if (k !== "type" && !branchKeywords.includes(k) && k !== "nullable") shared[k] = v;
  const branch = (type: string): OpenApiObject => {
    const b: OpenApiObject = { type, ...(out.nullable === true ? { nullable: true } : {}) };
    const own = type === "object" ? OBJECT_KEYWORDS : type === "array" ? ARRAY_KEYWORDS : [];
    for (const k of own) if (out[k] !== undefined) b[k] = out[k];
    return b;
  };
  return { ...shared, anyOf: types.map(branch) };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

// ------------------------------------------------------------------------------------------------
// Building blocks
// ------------------------------------------------------------------------------------------------

const ref = (name: string): OpenApiObject => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: OpenApiObject, description: string): OpenApiObject => ({ description, content: { "application/json": { schema } } });
const text = (description: string): OpenApiObject => ({ description, content: { "text/plain": { schema: { type: "string" } } } });
const noBody = (description: string): OpenApiObject => ({ description });
const error = (description: string): OpenApiObject => json(ref("Error"), description);
const arrayOf = (schema: OpenApiObject): OpenApiObject => ({ type: "array", items: schema });
const obj = (properties: Record<string, OpenApiObject>, required: string[] = []): OpenApiObject => ({
  type: "object",
  properties,
  ...(required.length > 0 ? { required } : {}),
});
const str: OpenApiObject = { type: "string" };
const int: OpenApiObject = { type: "integer" };
const bool: OpenApiObject = { type: "boolean" };

function query(name: string, description: string, schema: OpenApiObject = str): OpenApiObject {
  return { name, in: "query", required: false, description, schema };
}
function flag(name: string, description: string, dflt: boolean): OpenApiObject {
  return query(name, `${description} (default ${dflt})`, { type: "boolean", default: dflt });
}
function pathParam(name: string, description: string): OpenApiObject {
  return { name, in: "path", required: true, description, schema: str };
}

const force = (dflt = false) => flag("force", "override the lock of a running deployment (cancelling it)", dflt);
const appId = pathParam("appId", "the app's id without the leading '/'; it may contain further '/' (`shop/web`)");
const groupId = pathParam("groupId", "the group's id without the leading '/'; it may contain further '/'");
const taskId = pathParam("taskId", "a task (instance) id of the app");
const embed = query("embed", "what to embed: tasks, deployments, lastTaskFailure, readiness, failures (tasks and lastTaskFailure) (also with an `app.`/`apps.` prefix); repeat or separate with commas", arrayOf(str));
const groupEmbed = query("embed", "what to embed in the apps of the groups: `group.apps.tasks`, `group.apps.lastTaskFailure`, `group.apps.readiness`, `group.apps.failures`; repeat or separate with commas", arrayOf(str));
const killFlags = [
  flag("scale", "shrink the app's instances by the tasks killed instead of replacing them (not with wipe)", false),
  flag("wipe", "forget the tasks at once instead of waiting for their end (not with scale)", false),
  force(),
];

const writeAnswer = json(ref("DeploymentResult"), "the deployment the change started (also in the Marathon-Deployment-Id header)");
const validationFailed = error("the body is JSON of the wrong shape, or breaks a rule (`details` name the paths)");
const badJson = error("the body is not JSON");
const locked = json(ref("Conflict"), "a running deployment holds the app; retry with force=true");
const notFound = error("no such app, group, task or deployment");
const scaleAndWipe = error("scale and wipe are both true");

/** One documented operation. */
interface Operation {
  /** The fastify route serving it, `"<METHOD> <url>"` as registered. */
  route: string;
  path: string;
  summary: string;
  description?: string;
  parameters?: OpenApiObject[];
  requestBody?: OpenApiObject;
  responses: Record<string, OpenApiObject>;
}

const body = (schema: OpenApiObject, description: string): OpenApiObject => ({ required: true, description, content: { "application/json": { schema } } });

const versionParam = pathParam("version", "a version from the matching /versions list");
const dryRun = flag("dryRun", "answer the steps the deployment would take and deploy nothing", false);
const groupPutBody = body(
  { anyOf: [ref("Group"), obj({ scaleBy: { type: "number", minimum: 0 } }, ["scaleBy"]), obj({ version: str }, ["version"])] },
  "the group; or a scale factor; or a version of the root group to roll the group back to",
);
const groupPutResponses: Record<string, OpenApiObject> = {
  "200": json({ anyOf: [ref("DeploymentResult"), ref("DeploymentSteps")] }, "the deployment the change started (also in the Marathon-Deployment-Id header), or with dryRun=true its steps"),
  "400": badJson,
  "404": error("no such group, or (rollback) no such version kept"),
  "409": locked,
  "422": validationFailed,
};

const OPERATIONS: Operation[] = [
  // ---- apps
  {
    route: "POST /v2/apps",
    path: "/v2/apps",
    summary: "Create an app and start deploying it",
    parameters: [force()],
    requestBody: body(ref("AppDefinition"), "the app definition; unknown fields are ignored and listed in a Warning header"),
    responses: { "201": json(ref("App"), "created; Location and Marathon-Deployment-Id headers are set"), "400": badJson, "409": error("an app with this id exists, or a deployment holds it"), "422": validationFailed },
  },
  {
    route: "GET /v2/apps",
    path: "/v2/apps",
    summary: "List apps",
    parameters: [query("id", "only ids containing this text (case-insensitive)"), query("cmd", "only apps whose cmd contains this text"), query("label", "label selector: `k`, `k==v`, `k!=v`, `k in (v1, v2)`, `k notin (v1, v2)`, comma-separated, all must hold (each needs the label); characters other than `A-Za-z0-9-_.` are escaped with a backslash; an unparseable one is answered 400"), embed],
    responses: { "200": json(obj({ apps: arrayOf(ref("App")) }, ["apps"]), "the apps, by id"), "400": error("the label selector cannot be parsed") },
  },
  {
    route: "PUT /v2/apps",
    path: "/v2/apps",
    summary: "Create or change several apps in one deployment",
    description:
      "Each app of the list is created, or changed as `PUT /v2/apps/{appId}` would change it (`{\"id\": ..., \"version\": v}` rolls it back). Nothing is applied unless every app is valid; the error paths start with the app's index in the list (`/(1)/instances`).",
    parameters: [force(), flag("partialUpdate", "merge each app into its current definition", true)],
    requestBody: body(arrayOf({ anyOf: [ref("AppDefinition"), ref("AppVersionRollback")] }), "the (partial) app definitions, each with its id"),
    responses: { "200": writeAnswer, "400": badJson, "404": error("(rollback) no such app or version"), "409": locked, "422": validationFailed },
  },
  {
    route: "PATCH /v2/apps",
    path: "/v2/apps",
    summary: "Change some fields of several existing apps in one deployment",
    description: "Nothing is applied unless every app exists and is valid; the error paths start with the app's index in the list (`/(1)/instances`).",
    parameters: [force()],
    requestBody: body(arrayOf(ref("AppDefinition")), "the fields to change, each with the app's id"),
    responses: { "200": writeAnswer, "400": badJson, "404": error("an app of the list does not exist"), "409": locked, "422": validationFailed },
  },
  {
    route: "GET /v2/apps/*",
    path: "/v2/apps/{appId}",
    summary: "Show an app with its tasks, deployments, readiness check results and last task failure",
    parameters: [appId, embed],
    responses: { "200": json(obj({ app: ref("App") }, ["app"]), "the app"), "404": notFound },
  },
  {
    route: "PUT /v2/apps/*",
    path: "/v2/apps/{appId}",
    summary: "Create or replace an app; `{\"version\": v}` rolls back to a stored version",
    description: "A change of `instances` alone scales; any other change is a new config version rolled out by the app's upgradeStrategy.",
    parameters: [appId, force(), flag("partialUpdate", "merge the body into the current definition", true)],
    requestBody: body({ anyOf: [ref("AppDefinition"), ref("AppVersionRollback")] }, "the (partial) app definition, or a version to roll back to"),
    responses: { "200": writeAnswer, "201": writeAnswer, "400": badJson, "404": notFound, "409": locked, "422": validationFailed },
  },
  {
    route: "PATCH /v2/apps/*",
    path: "/v2/apps/{appId}",
    summary: "Change some fields of an existing app",
    parameters: [appId, force()],
    requestBody: body(ref("AppDefinition"), "the fields to change"),
    responses: { "200": writeAnswer, "400": badJson, "404": notFound, "409": locked, "422": validationFailed },
  },
  {
    route: "DELETE /v2/apps/*",
    path: "/v2/apps/{appId}",
    summary: "Remove an app: its tasks are killed, then it is forgotten",
    parameters: [appId, force(true)],
    responses: { "200": writeAnswer, "404": notFound, "409": locked },
  },
  {
    route: "POST /v2/apps/*",
    path: "/v2/apps/{appId}/restart",
    summary: "Restart every task of an app with a rolling deployment",
    parameters: [appId, force()],
    responses: { "200": writeAnswer, "404": notFound, "409": locked },
  },
  {
    route: "GET /v2/apps/*",
    path: "/v2/apps/{appId}/tasks",
    summary: "List an app's tasks",
    parameters: [appId],
    responses: { "200": json(obj({ tasks: arrayOf(ref("Task")) }, ["tasks"]), "the tasks"), "404": notFound },
  },
  {
    route: "DELETE /v2/apps/*",
    path: "/v2/apps/{appId}/tasks",
    summary: "Kill an app's tasks (replaced unless scale=true)",
    parameters: [appId, query("host", "only the tasks on this host"), ...killFlags],
    responses: { "200": json({ anyOf: [obj({ tasks: arrayOf(ref("Task")) }, ["tasks"]), ref("DeploymentResult")] }, "the tasks killed, or with scale=true the deployment"), "400": scaleAndWipe, "404": notFound, "409": locked },
  },
  {
    route: "GET /v2/apps/*",
    path: "/v2/apps/{appId}/tasks/{taskId}",
    summary: "Show one task of an app",
    parameters: [appId, taskId],
    responses: { "200": json(obj({ task: ref("Task") }, ["task"]), "the task"), "404": notFound },
  },
  {
    route: "DELETE /v2/apps/*",
    path: "/v2/apps/{appId}/tasks/{taskId}",
    summary: "Kill one task of an app (replaced unless scale=true)",
    parameters: [appId, taskId, query("host", "only if the task is on this host"), ...killFlags],
    responses: { "200": json({ anyOf: [obj({ task: ref("Task") }, ["task"]), ref("DeploymentResult")] }, "the task killed, or with scale=true the deployment"), "400": scaleAndWipe, "404": notFound, "409": locked },
  },
  {
    route: "GET /v2/apps/*",
    path: "/v2/apps/{appId}/versions",
    summary: "List the stored versions of an app, newest first",
    parameters: [appId],
    responses: { "200": json(obj({ versions: arrayOf(str) }, ["versions"]), "the versions (ISO times)"), "404": notFound },
  },
  {
    route: "GET /v2/apps/*",
    path: "/v2/apps/{appId}/versions/{version}",
    summary: "Show an app as it was in one version",
    parameters: [appId, pathParam("version", "a version from /versions")],
    responses: { "200": json(ref("AppDefinition"), "the definition of that version"), "404": notFound },
  },
  // ---- tasks
  {
    route: "GET /v2/tasks",
    path: "/v2/tasks",
    summary: "List the tasks of every app",
    parameters: [
      query("status", "only tasks in this state", { type: "string", enum: ["running", "staging", "killing", "unreachable"] }),
      query("status[]", "only tasks in one of these states; repeat for several", arrayOf({ type: "string", enum: ["running", "staging", "killing", "unreachable"] })),
    ],
    responses: { "200": json(obj({ tasks: arrayOf(ref("Task")) }, ["tasks"]), "the tasks"), "400": error("a status is none of those allowed") },
  },
  {
    route: "POST /v2/tasks/delete",
    path: "/v2/tasks/delete",
    summary: "Kill tasks by id (replaced unless scale=true)",
    parameters: killFlags,
    requestBody: body(obj({ ids: arrayOf(str) }, ["ids"]), "the task ids"),
    responses: { "200": json({ anyOf: [obj({ tasks: arrayOf(ref("Task")) }, ["tasks"]), ref("DeploymentResult")] }, "the tasks killed, or with scale=true the deployment"), "400": error("the body is not JSON, scale and wipe are both true, or an id cannot be a task id"), "409": locked, "422": validationFailed },
  },
  // ---- deployments and queue
  {
    route: "GET /v2/deployments",
    path: "/v2/deployments",
    summary: "List running deployments",
    responses: { "200": json(arrayOf(ref("Deployment")), "the deployments, oldest first") },
  },
  {
    route: "DELETE /v2/deployments/:id",
    path: "/v2/deployments/{deploymentId}",
    summary: "Roll a deployment back (a new deployment), or with force=true just stop it",
    parameters: [pathParam("deploymentId", "the deployment's id"), force()],
    responses: { "200": writeAnswer, "202": noBody("stopped (force=true)"), "404": notFound },
  },
  {
    route: "GET /v2/queue",
    path: "/v2/queue",
    summary: "Show the launch queue: what waits for offers, its delay and why offers were not used",
    responses: { "200": json(obj({ queue: arrayOf(ref("QueueEntry")) }, ["queue"]), "the queue") },
  },
  {
    route: "DELETE /v2/queue/*",
    path: "/v2/queue/{appId}/delay",
    summary: "Lift an app's launch delay (backoff)",
    parameters: [appId],
    responses: { "204": noBody("the delay is gone"), "404": notFound },
  },
  // ---- groups
  {
    route: "GET /v2/groups",
    path: "/v2/groups",
    summary: "Show the root group with every app and group below it",
    parameters: [groupEmbed],
    responses: { "200": json(ref("GroupInfo"), "the root group") },
  },
  {
    route: "POST /v2/groups",
    path: "/v2/groups",
    summary: "Create a group with its apps and subgroups (one deployment, in dependency order)",
    parameters: [force()],
    requestBody: body(ref("Group"), "the group"),
    responses: { "201": writeAnswer, "400": badJson, "409": error("the group or one of its apps exists, or a deployment holds an app"), "422": validationFailed },
  },
  {
    route: "GET /v2/groups/*",
    path: "/v2/groups/{groupId}",
    summary: "Show a group",
    parameters: [groupId, groupEmbed],
    responses: { "200": json(ref("GroupInfo"), "the group"), "404": notFound },
  },
  {
    route: "GET /v2/groups/*",
    path: "/v2/groups/versions",
    summary: "List the kept versions of the root group, newest first (a bare array)",
    responses: { "200": json(arrayOf(str), "the versions (ISO times)") },
  },
  {
    route: "GET /v2/groups/*",
    path: "/v2/groups/versions/{version}",
    summary: "Show the root group as it was at one version",
    parameters: [versionParam],
    responses: { "200": json(ref("GroupVersion"), "the root group then"), "404": notFound },
  },
  {
    route: "GET /v2/groups/*",
    path: "/v2/groups/{groupId}/versions",
    summary: "List the versions of the root group at which the group existed, newest first (a bare array)",
    parameters: [groupId],
    responses: { "200": json(arrayOf(str), "the versions (ISO times)"), "404": notFound },
  },
  {
    route: "GET /v2/groups/*",
    path: "/v2/groups/{groupId}/versions/{version}",
    summary: "Show a group as it was at one version of the root group",
    parameters: [groupId, versionParam],
    responses: { "200": json(ref("GroupVersion"), "the group then"), "404": notFound },
  },
  {
    route: "PUT /v2/groups",
    path: "/v2/groups",
    summary: "Change the root group: replace its apps and groups, scale every app (`scaleBy`), or roll it back to a version (`version`)",
    parameters: [force(), dryRun],
    requestBody: groupPutBody,
    responses: groupPutResponses,
  },
  {
    route: "PUT /v2/groups/*",
    path: "/v2/groups/{groupId}",
    summary: "Change a group: replace its apps and subgroups, scale every app (`scaleBy`), or roll it back to a version of the root group (`version`)",
    description:
      "A rollback brings the group's apps, subgroups and dependencies back to how they were at that version, in one deployment: apps absent then are removed, changed apps get their definition of then, removed apps come back.",
    parameters: [groupId, force(), dryRun],
    requestBody: groupPutBody,
    responses: groupPutResponses,
  },
  {
    route: "DELETE /v2/groups/*",
    path: "/v2/groups/{groupId}",
    summary: "Remove a group with every app below it",
    parameters: [groupId, force()],
    responses: { "200": writeAnswer, "404": notFound, "409": locked },
  },
  // ---- misc
  {
    route: "GET /v2/events",
    path: "/v2/events",
    summary: "Stream events (server-sent events; `event:` is the eventType, `data:` the JSON event)",
    parameters: [query("event_type", "only these event types; repeat for several", arrayOf(str))],
    responses: { "200": { description: "an endless event stream", content: { "text/event-stream": { schema: str } } }, "503": error("too many streams") },
  },
  {
    route: "GET /v2/info",
    path: "/v2/info",
    summary: "Describe this Marathon: version, leader, framework id and configuration",
    responses: { "200": json(ref("Info"), "the description") },
  },
  {
    route: "GET /v2/leader",
    path: "/v2/leader",
    summary: "The leading Marathon's address",
    responses: { "200": json(obj({ leader: str }, ["leader"]), "host:port of the leader"), "404": error("no leader is known") },
  },
  { route: "GET /ping", path: "/ping", summary: "Liveness probe", responses: { "200": text("`pong`") } },
  { route: "GET /metrics", path: "/metrics", summary: "Prometheus metrics", responses: { "200": text("metrics in the Prometheus text format") } },
  {
    route: "GET /openapi.json",
    path: "/openapi.json",
    summary: "This document",
    responses: { "200": json({ type: "object" }, "the OpenAPI 3 description of this API") },
  },
];

// ------------------------------------------------------------------------------------------------
// Response schemas (what the handlers in http.ts and core.ts produce)
// ------------------------------------------------------------------------------------------------

const readinessResult = obj(
  {
    name: str,
    taskId: str,
    ready: bool,
    lastResponse: obj({ status: int, contentType: str, body: str }, ["status", "contentType", "body"]),
  },
  ["name", "taskId", "ready"],
);

const taskSchema = obj(
  {
    id: str,
    appId: str,
    host: str,
    slaveId: str,
    ports: arrayOf(int),
    servicePorts: arrayOf(int),
    ipAddresses: arrayOf({ type: "object" }),
    stagedAt: str,
    startedAt: str,
    version: str,
    state: str,
    healthCheckResults: arrayOf(obj({ alive: bool, taskId: str, instanceId: str })),
  },
  ["id", "appId", "host", "slaveId", "ports", "stagedAt", "version", "state"],
);

const deploymentSchema = obj(
  {
    id: str,
    version: str,
    affectedApps: arrayOf(str),
    affectedPods: arrayOf(str),
    steps: arrayOf(obj({ actions: arrayOf(obj({ action: str, app: str })) })),
    currentActions: arrayOf(obj({ action: str, app: str, readinessCheckResults: arrayOf(ref("ReadinessCheckResult")) })),
    currentStep: int,
    totalSteps: int,
  },
  ["id", "version", "affectedApps", "steps", "currentActions", "currentStep", "totalSteps"],
);

const appSchema: OpenApiObject = {
  allOf: [
    ref("AppDefinition"),
    obj(
      {
        version: str,
        versionInfo: obj({ lastScalingAt: str, lastConfigChangeAt: str }),
        tasksStaged: int,
        tasksRunning: int,
        tasksHealthy: int,
        tasksUnhealthy: int,
        deployments: arrayOf(obj({ id: str }, ["id"])),
        tasks: arrayOf(ref("Task")),
        readinessCheckResults: arrayOf(ref("ReadinessCheckResult")),
        lastTaskFailure: obj({ appId: str, taskId: str, host: str, slaveId: str, state: str, message: str, timestamp: str, version: str }),
      },
      ["version", "versionInfo", "tasksStaged", "tasksRunning", "tasksHealthy", "tasksUnhealthy", "deployments"],
    ),
  ],
};

const groupInfoSchema = obj(
  {
    id: str,
    apps: arrayOf(ref("App")),
    groups: arrayOf(ref("GroupInfo")),
    pods: arrayOf({ type: "object" }),
    dependencies: arrayOf(str),
    version: str,
  },
  ["id", "apps", "groups", "dependencies"],
);

/** A group as it was at a version of the root group: app definitions without task counts. */
const groupVersionSchema = obj(
  {
    id: str,
    apps: arrayOf(ref("AppDefinition")),
    groups: arrayOf(ref("GroupVersion")),
    pods: arrayOf({ type: "object" }),
    dependencies: arrayOf(str),
    version: str,
  },
  ["id", "apps", "groups", "dependencies", "version"],
);

const queueEntrySchema = obj(
  {
    app: ref("App"),
    count: int,
    delay: obj({ timeLeftSeconds: int, overdue: bool }, ["timeLeftSeconds", "overdue"]),
    since: str,
    role: str,
    processedOffersSummary: obj({
      processedOffersCount: int,
      unusedOffersCount: int,
      lastUnusedOfferAt: str,
      lastUsedOfferAt: str,
      rejectSummaryLastOffers: arrayOf(obj({ reason: str, declined: int, processed: int })),
    }),
    lastUnusedOffers: arrayOf(obj({ offer: obj({ id: str, agentId: str, hostname: str }), timestamp: str, reason: arrayOf(str), detail: str })),
  },
  ["app", "count", "delay"],
);

const errorSchema = obj({ message: str, details: arrayOf(obj({ path: str, errors: arrayOf(str) }, ["path", "errors"])) }, ["message"]);

const infoSchema = obj(
  {
    name: str,
    version: str,
    buildref: str,
    elected: bool,
    leader: { type: "string", nullable: true },
    frameworkId: { type: "string", nullable: true },
    marathon_config: { type: "object" },
    http_config: { type: "object" },
    event_subscriber: { type: "object" },
  },
  ["name", "version", "elected"],
);

// ------------------------------------------------------------------------------------------------
// The document
// ------------------------------------------------------------------------------------------------

function operationId(method: string, path: string): string {
  const words = path
    .split("/")
    .filter((s) => s !== "" && s !== "v2")
    .map((s) => s.replace(/[{}.]/g, ""))
    .map((s) => s.charAt(0).toUpperCase() + s.slice(1));
  return method + words.join("");
}

function build(version: string): OpenApiDocument {
  const paths: OpenApiDocument["paths"] = {};
  for (const op of OPERATIONS) {
    const [method, url] = op.route.split(" ") as [string, string];
    const lower = method.toLowerCase();
    const entry: OpenApiObject = {
      operationId: operationId(lower, op.path),
      summary: op.summary,
      ...(op.description ? { description: op.description } : {}),
      ...(op.parameters && op.parameters.length > 0 ? { parameters: op.parameters } : {}),
      ...(op.requestBody ? { requestBody: op.requestBody } : {}),
      responses: op.responses,
      [ROUTE_FIELD]: op.route,
    };
    const item = (paths[op.path] ??= {});
    item[lower] = entry;
    // fastify answers HEAD for every GET route (the GET without its body).
    if (method === "GET") {
      item.head = {
        operationId: operationId("head", op.path),
        summary: `${op.summary} (headers only)`,
        ...(op.parameters && op.parameters.length > 0 ? { parameters: op.parameters } : {}),
        responses: Object.fromEntries(Object.entries(op.responses).map(([code, r]) => [code, noBody(String(r.description))])),
        [ROUTE_FIELD]: `HEAD ${url}`,
      };
    }
  }
  return {
    openapi: OPENAPI_VERSION,
    info: {
      title: "Marathon on Corral",
      version,
      description:
        "Marathon's v2 REST API as Corral implements it. Ids in paths are written without their leading '/' and may contain '/'. Errors answer `{message, details}`; writes answer `{deploymentId, version}` with a Marathon-Deployment-Id header.",
    },
    paths,
    components: {
      schemas: {
        AppDefinition: toOpenApiSchema(APP_SCHEMA),
        Group: toOpenApiSchema(GROUP_SCHEMA, { group: "NestedGroup" }),
        NestedGroup: toOpenApiSchema((GROUP_SCHEMA.definitions as Record<string, JsonSchema>).group!, { group: "NestedGroup" }),
        AppVersionRollback: obj({ version: str }, ["version"]),
        App: appSchema,
        Task: taskSchema,
        ReadinessCheckResult: readinessResult,
        Deployment: deploymentSchema,
        DeploymentResult: obj({ deploymentId: str, version: str }, ["deploymentId", "version"]),
        DeploymentSteps: obj({ steps: arrayOf(obj({ actions: arrayOf(obj({ action: str, app: str }, ["action", "app"])) }, ["actions"])) }, ["steps"]),
        GroupInfo: groupInfoSchema,
        GroupVersion: groupVersionSchema,
        QueueEntry: queueEntrySchema,
        Info: infoSchema,
        Error: errorSchema,
        Conflict: obj({ message: str, deployments: arrayOf(obj({ id: str }, ["id"])) }, ["message", "deployments"]),
      },
    },
  };
}

const cache = new Map<string, OpenApiDocument>();

/** The OpenAPI document of the API (built once per version string). */
export function marathonOpenApi(version: string): OpenApiDocument {
  let doc = cache.get(version);
  if (!doc) cache.set(version, (doc = build(version)));
  return doc;
}

/** The fastify routes (`"<METHOD> <url>"`) the document says serve its operations. */
export function documentedRoutes(doc: OpenApiDocument): Set<string> {
  const out = new Set<string>();
  for (const item of Object.values(doc.paths)) for (const op of Object.values(item)) out.add(String(op[ROUTE_FIELD]));
  return out;
}
