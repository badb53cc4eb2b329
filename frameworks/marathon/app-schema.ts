/**
 * JSON schemas of Marathon app and group bodies: shapes and types only.
 *
 * The schema answers "is every field the JSON type Marathon reads it as" (a wrong type is Marathon's
 * 422 "Invalid JSON"); ranges, enums, cross-field rules and defaults are semantic and live in
 * `app-spec.ts`, which can name the rule in words. Every known field is listed, so the same schema
 * also tells which fields are unknown (accepted, ignored and reported in a warning).
 *
 * Optional fields are `nullable`: Marathon reads `"cmd": null` as "not given", and so do we.
 */

/** A JSON schema document (draft-07 subset understood by ajv). */
export type JsonSchema = { readonly [keyword: string]: unknown };

const nullable = { nullable: true } as const;
const str: JsonSchema = { type: "string", ...nullable };
const int: JsonSchema = { type: "integer", ...nullable };
const num: JsonSchema = { type: "number", ...nullable };
const bool: JsonSchema = { type: "boolean", ...nullable };
/** Any JSON value: a known field we do not look inside (read-only status fields). */
const anything: JsonSchema = {};

function obj(properties: Record<string, JsonSchema>): JsonSchema {
  return { type: "object", ...nullable, properties };
}

/** The same schema without `nullable`: a `null` inside a list is an error, not a missing entry. */
function nonNull(schema: JsonSchema): JsonSchema {
  return Object.fromEntries(Object.entries(schema).filter(([keyword]) => keyword !== "nullable"));
}

function arr(items: JsonSchema): JsonSchema {
  return { type: "array", ...nullable, items: nonNull(items) };
}

function map(values: JsonSchema): JsonSchema {
  return { type: "object", ...nullable, additionalProperties: values };
}

const stringMap = map({ type: "string" });
const stringArray = arr({ type: "string" });

const portDefinition = obj({ port: int, protocol: str, name: str, labels: stringMap });

const healthCheck = obj({
  protocol: str,
  path: str,
  portIndex: int,
  port: int,
  command: obj({ value: str }),
  gracePeriodSeconds: int,
  intervalSeconds: int,
  timeoutSeconds: int,
  maxConsecutiveFailures: int,
  delaySeconds: int,
  ignoreHttp1xx: bool,
  ipProtocol: str,
});

const readinessCheck = obj({
  name: str,
  protocol: str,
  path: str,
  portName: str,
  intervalSeconds: int,
  timeoutSeconds: int,
  httpStatusCodesForReady: arr({ type: "integer" }),
  preserveLastResponse: bool,
});

const fetchUri: JsonSchema = { ...obj({ uri: str, executable: bool, extract: bool, cache: bool, destPath: str }), required: ["uri"] };

const volume = obj({
  containerPath: str,
  hostPath: str,
  mode: str,
  persistent: { type: "object", ...nullable },
  external: { type: "object", ...nullable },
  secret: str,
});

const container = obj({
  type: str,
  docker: { type: "object", ...nullable },
  appc: { type: "object", ...nullable },
  volumes: arr(volume),
  portMappings: arr({ type: "object" }),
  linuxInfo: { type: "object", ...nullable },
});

const network = obj({ name: str, mode: str, labels: stringMap });

const appCheck = obj({
  http: obj({ portIndex: int, port: int, path: str, scheme: str }),
  tcp: obj({ portIndex: int, port: int }),
  exec: obj({ command: obj({ shell: str, argv: stringArray }) }),
  intervalSeconds: int,
  timeoutSeconds: int,
  delaySeconds: int,
});

/** A resource limit is a number or the string `unlimited`. */
const resourceLimit: JsonSchema = { type: ["number", "string"], ...nullable };

/**
 * Fields Marathon itself writes into app JSON (GET responses). Clients send them back when they
 * PUT what they fetched; they are known, read-only and ignored, never reported as unknown.
 */
export const READ_ONLY_APP_FIELDS: readonly string[] = [
  "version",
  "versionInfo",
  "tasksStaged",
  "tasksRunning",
  "tasksHealthy",
  "tasksUnhealthy",
  "deployments",
  "tasks",
  "lastTaskFailure",
  "tasksStats",
  "readinessCheckResults",
];

const appProperties: Record<string, JsonSchema> = {
  id: str,
  cmd: str,
  args: stringArray,
  user: str,
  env: map({ type: ["string", "object"], properties: { secret: str } }),
  instances: int,
  cpus: num,
  mem: num,
  disk: num,
  gpus: int,
  executor: str,
  constraints: arr({ type: "array", items: { type: "string" } }),
  acceptedResourceRoles: stringArray,
  role: str,
  labels: stringMap,
  fetch: arr(fetchUri),
  uris: stringArray,
  ports: arr({ type: "integer" }),
  portDefinitions: arr(portDefinition),
  requirePorts: bool,
  backoffSeconds: int,
  backoffFactor: num,
  maxLaunchDelaySeconds: int,
  container,
  healthChecks: arr(healthCheck),
  readinessChecks: arr(readinessCheck),
  check: appCheck,
  dependencies: stringArray,
  upgradeStrategy: obj({ minimumHealthCapacity: num, maximumOverCapacity: num }),
  killSelection: str,
  unreachableStrategy: { type: ["string", "object"], ...nullable, properties: { inactiveAfterSeconds: int, expungeAfterSeconds: int } },
  taskKillGracePeriodSeconds: int,
  networks: arr(network),
  ipAddress: { type: "object", ...nullable },
  secrets: map({ type: "object" }),
  residency: { type: "object", ...nullable },
  executorResources: obj({ cpus: num, mem: num, disk: num }),
  resourceLimits: obj({ cpus: resourceLimit, mem: resourceLimit }),
  tty: bool,
  ...Object.fromEntries(READ_ONLY_APP_FIELDS.map((field) => [field, anything])),
};

/** The schema of one app definition (`POST /v2/apps` body). */
export const APP_SCHEMA: JsonSchema = {
  $id: "corral:marathon:app",
  type: "object",
  properties: appProperties,
};

/** The schema of an app inside a group body: the same fields, `id` required, `null` is no app. */
const nestedApp: JsonSchema = { type: "object", required: ["id"], properties: appProperties };

const groupProperties: Record<string, JsonSchema> = {
  id: str,
  apps: arr(nestedApp),
  groups: arr({ $ref: "#/definitions/group" }),
  pods: arr({ type: "object" }),
  dependencies: stringArray,
  scaleBy: num,
  version: str,
  versionInfo: anything,
  enforceRole: bool,
};

/**
 * The schema of a group body (`POST /v2/groups`, `PUT /v2/groups/{id}`). Groups nest; a nested
 * group must name itself, the outer one may take its id from the URL.
 */
export const GROUP_SCHEMA: JsonSchema = {
  $id: "corral:marathon:group",
  type: "object",
  properties: groupProperties,
  definitions: {
    group: { type: "object", required: ["id"], properties: groupProperties },
  },
};
