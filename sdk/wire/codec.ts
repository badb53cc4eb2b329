/**
 * Encoding and decoding of the wire contract (`sdk/proto/corral.proto`), plus the guard every bus
 * handler sits behind.
 *
 * Decoding is strict because everything on the bus crosses a trust boundary: unknown enum values,
 * integers JavaScript cannot represent exactly, non-finite numbers, missing required fields (see
 * {@link REQUIRED}), payloads that do not belong on the subject and a sender id other than the one
 * a per-sender subject is for (`SubjectSpec.senderIsId`) all make a message invalid.
 * Encoding applies the same rules, so a message this codec sends is one it would accept, and also
 * refuses several members of one oneof (a received message with several keeps the last one on the
 * wire, as protobuf specifies: protobufjs drops the others while parsing) and a 32-bit field's
 * value outside its range (which protobufjs would cut down without a word).
 *
 * Inside one process (the simulator) an envelope may travel as its checked message instead of its
 * bytes (`encodeEnvelope` given such a transport); decoding it applies the same rules.
 *
 * @module
 */

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import type { IncomingMessage, Logger, MessageHandler, Transport } from "../transport.ts";
import { REPLY_PAYLOADS, parseSubject, subjectKind } from "./subjects.ts";
import type {
  AgentInfo,
  CallResponse,
  Envelope,
  EnvelopeOf,
  EnvelopePayload,
  FrameworkInfo,
  MasterInfo,
  Offer,
  PayloadKind,
  Resource,
  TaskInfo,
  TaskStatus,
} from "./types.ts";
import { PAYLOAD_KINDS } from "./types.ts";

export type * from "./types.ts";

/** The contract version this code speaks; see the compatibility rules in corral.proto. */
export const SCHEMA_VERSION = 1;
/** The oldest version this code still accepts. */
export const MIN_SCHEMA_VERSION = 1;

/** The protobuf package of the contract. */
export const PROTO_PACKAGE = "corral.v1";

// ------------------------------------------------------------------------------------------------
// Loading the schema
// ------------------------------------------------------------------------------------------------

/**
 * Finds corral.proto next to the sources. The second candidate covers the compiled layout
 * (`dist/sdk/wire/codec.js`), where the .proto is not copied.
 */
function locateProto(): string {
  const candidates = ["../proto/corral.proto", "../../../sdk/proto/corral.proto"].map((rel) =>
    fileURLToPath(new URL(rel, import.meta.url)),
  );
  const found = candidates.find((path) => existsSync(path));
  if (found === undefined) throw new Error(`corral.proto not found; looked at ${candidates.join(", ")}`);
  return found;
}

/** The parsed schema (protobufjs reflection), for tools that need raw access. */
export const wireRoot: protobuf.Root = protobuf.loadSync(locateProto());
// Resolve every type reference now, so a broken schema fails at import rather than mid-decode.
wireRoot.resolveAll();

function lookupType(name: string): protobuf.Type {
  return wireRoot.lookupType(`${PROTO_PACKAGE}.${name}`);
}

const EnvelopeType = lookupType("Envelope");

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

/** Why a message was dropped; a closed set so that it is safe as a metrics label. */
export type DropReason =
  /** Not protobuf, or not an Envelope. */
  | "decode_error"
  /** A version this code does not speak (including 0: not set). */
  | "schema_version"
  /** No payload member set. */
  | "missing_payload"
  /** A payload kind that does not belong on the subject. */
  | "wrong_payload"
  /** A sender speaking for another id than its subject's (e.g. one agent for another). */
  | "wrong_sender"
  /** Decoded, but breaks a field rule. */
  | "invalid"
  /** Valid, but the handler threw. */
  | "handler_error";

export const DROP_REASONS: readonly DropReason[] = [
  "decode_error",
  "schema_version",
  "missing_payload",
  "wrong_payload",
  "wrong_sender",
  "invalid",
  "handler_error",
];

/** A message that cannot be decoded or encoded. `problems` name the field and the rule broken. */
export class WireError extends Error {
  readonly reason: DropReason;
  readonly problems: readonly string[];
  /** The call id of a message that decoded as an envelope but was refused (so a request can be answered). */
  readonly callId: string | undefined;
  constructor(reason: DropReason, problems: readonly string[], options?: { cause?: unknown; callId?: string }) {
    super(`${reason}: ${problems.join("; ")}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "WireError";
    this.reason = reason;
    this.problems = problems;
    this.callId = options?.callId;
  }
}

// ------------------------------------------------------------------------------------------------
// Field rules proto3 cannot express
// ------------------------------------------------------------------------------------------------

/**
 * Fields a message must carry, by message name. A listed field is missing when it is absent, an
 * empty string, empty bytes, an empty list, or an enum's UNSPECIFIED zero; a listed oneof is
 * missing when no member is set. Nested messages are checked wherever they occur.
 */
export const REQUIRED: Readonly<Record<string, readonly string[]>> = {
  Envelope: ["senderId", "payload"],
  Resource: ["name", "role", "value"],
  Attribute: ["name"],
  CommandInfo: ["value"],
  TaskInfo: ["taskId", "name", "agentId", "command"],
  HealthCheck: ["kind"],
  TaskStatus: ["taskId", "state", "source"],
  Offer: ["id", "frameworkId", "agentId", "hostname", "role"],
  FrameworkInfo: ["name"],
  AgentInfo: ["hostname"],
  MasterInfo: ["id"],
  Operation: ["kind"],
  "Operation.Launch": ["taskInfos"],
  SchedulerCall: ["kind"],
  "SchedulerCall.Subscribe": ["frameworkInfo"],
  "SchedulerCall.Accept": ["offerIds"],
  "SchedulerCall.Decline": ["offerIds"],
  "SchedulerCall.Kill": ["taskId"],
  "SchedulerCall.Acknowledge": ["agentId", "taskId", "uuid"],
  "SchedulerCall.Reconcile.Task": ["taskId"],
  "SchedulerCall.FrameworkMessage": ["agentId"],
  SchedulerEvent: ["kind"],
  "SchedulerEvent.Subscribed": ["frameworkId"],
  "SchedulerEvent.Offers": ["offers"],
  "SchedulerEvent.Rescind": ["offerId"],
  "SchedulerEvent.Update": ["status"],
  "SchedulerEvent.FrameworkMessage": ["agentId"],
  "SchedulerEvent.Failure": ["agentId"],
  "SchedulerEvent.Error": ["message"],
  AgentToMaster: ["kind"],
  "AgentToMaster.Register": ["agentInfo"],
  "AgentToMaster.Reregister": ["agentInfo"],
  "AgentToMaster.TaskRecord": ["frameworkId", "task", "status"],
  "AgentToMaster.StatusUpdate": ["frameworkId", "status"],
  MasterToAgent: ["kind"],
  "MasterToAgent.Registered": ["agentId"],
  "MasterToAgent.Reregistered": ["agentId"],
  "MasterToAgent.RunTask": ["framework", "task"],
  "MasterToAgent.KillTask": ["frameworkId", "taskId"],
  "MasterToAgent.ShutdownFramework": ["frameworkId"],
  "MasterToAgent.StatusUpdateAck": ["frameworkId", "taskId", "uuid"],
};

type Plain = Record<string, unknown>;
type Rule = (value: Plain, path: string, problems: string[]) => void;

/** The members of SchedulerCall's `kind`: a call to encode may leave the discriminator out. */
const SCHEDULER_CALL_KINDS = lookupType("SchedulerCall").oneofs!["kind"]!.fieldsArray.map((field) => field.name);

/**
 * Rules that relate several fields, by message name. They see a message to encode as the sender
 * wrote it, so an absent field counts as what the receiver will read: its proto3 zero, or for a
 * oneof's discriminator the member that is set.
 */
const CROSS_FIELD_RULES: Readonly<Record<string, Rule>> = {
  Range: (v, path, problems) => {
    const begin = v.begin ?? 0;
    const end = v.end ?? 0;
    if (typeof begin === "number" && typeof end === "number" && begin > end) {
      problems.push(`${at(path, "begin")}: must be <= end (${begin} > ${end})`);
    }
  },
  SchedulerCall: (v, path, problems) => {
    // Every call but the first SUBSCRIBE names its framework.
    // (A discriminator that is not a member name is the oneof check's to report.)
    const kind = typeof v.kind === "string" ? v.kind : SCHEDULER_CALL_KINDS.find((member) => isPresent(v[member]));
    if (kind !== undefined && kind !== "subscribe" && !v.frameworkId) {
      problems.push(`${at(path, "frameworkId")}: must not be empty for ${kind}`);
    }
  },
  "AgentToMaster.Reregister": (v, path, problems) => {
    const info = v.agentInfo as Plain | undefined;
    if (info && !info.id) problems.push(`${at(path, "agentInfo.id")}: must not be empty when re-registering`);
  },
  "AgentToMaster.StatusUpdate": (v, path, problems) => {
    // Optional, so absent is allowed; but set to the zero it would claim a state that is none.
    if (v.latestState === "TASK_STATE_UNSPECIFIED") problems.push(`${at(path, "latestState")}: must not be TASK_STATE_UNSPECIFIED when set`);
  },
  HealthCheck: (v, path, problems) => {
    for (const field of ["delaySeconds", "intervalSeconds", "timeoutSeconds", "gracePeriodSeconds"]) {
      const seconds = v[field];
      if (typeof seconds === "number" && !(seconds >= 0)) problems.push(`${at(path, field)}: must be >= 0, got ${seconds}`);
    }
  },
  CallResponse: (v, path, problems) => {
    if (v.ok !== true && !v.errorCode) problems.push(`${at(path, "errorCode")}: must not be empty when ok is false`);
  },
};

// ------------------------------------------------------------------------------------------------
// Reflection helpers
// ------------------------------------------------------------------------------------------------

const LONG_TYPES = new Set(["int64", "uint64", "sint64", "fixed64", "sfixed64"]);
const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const UINT32_MAX = 2 ** 32 - 1;
const UNSIGNED_TYPES = new Set(["uint32", "uint64", "fixed32", "fixed64"]);
const FLOAT_TYPES = new Set(["double", "float"]);

/** `"corral.v1.SchedulerCall.Accept"` -> `"SchedulerCall.Accept"`. */
const shortNames = new WeakMap<protobuf.Type, string>();
function shortName(type: protobuf.Type): string {
  let name = shortNames.get(type);
  if (name === undefined) {
    const prefix = `.${PROTO_PACKAGE}.`;
    name = type.fullName.startsWith(prefix) ? type.fullName.slice(prefix.length) : type.fullName;
    shortNames.set(type, name);
  }
  return name;
}

/**
 * Paths of problems (`schedulerCall.accept.offerIds[0]`) are only needed when there is a problem.
 * Every message is therefore checked first with paths switched off (no string is built per field:
 * this runs for every message on the bus), and only a message that fails is checked again with
 * paths on, to say where.
 */
let pathsOff = false;

function at(path: string, field: string): string {
  if (pathsOff) return path;
  return path === "" ? field : `${path}.${field}`;
}

function atIndex(path: string, index: number | string): string {
  return pathsOff ? path : `${path}[${index}]`;
}

/**
 * Runs `check` without paths; if it finds problems, runs it again with paths for the messages.
 * A check may keep two kinds apart (decoding reports broken rules after its own checks).
 */
function withPathsOnFailure<T>(check: (problems: string[], rules: string[]) => T): { result: T; problems: string[]; rules: string[] } {
  const quick: string[] = [];
  const quickRules: string[] = [];
  pathsOff = true;
  let result: T;
  try {
    result = check(quick, quickRules);
  } finally {
    pathsOff = false;
  }
  if (quick.length === 0 && quickRules.length === 0) return { result, problems: quick, rules: quickRules };
  const detailed: string[] = [];
  const detailedRules: string[] = [];
  return { result: check(detailed, detailedRules), problems: detailed, rules: detailedRules };
}

/** proto3 `optional` scalars are modelled by protobufjs as single-member synthetic oneofs. */
function isSyntheticOneof(oneof: protobuf.OneOf): boolean {
  return oneof.fieldsArray.length === 1 && oneof.fieldsArray[0]!.options?.["proto3_optional"] === true;
}

const oneofCache = new WeakMap<protobuf.Type, protobuf.OneOf[]>();
function realOneofs(type: protobuf.Type): protobuf.OneOf[] {
  let oneofs = oneofCache.get(type);
  if (oneofs === undefined) {
    oneofs = type.oneofsArray.filter((o) => !isSyntheticOneof(o));
    oneofCache.set(type, oneofs);
  }
  return oneofs;
}

function isPresent(value: unknown): boolean {
  return value !== undefined && value !== null;
}

// ------------------------------------------------------------------------------------------------
// Decoding: protobufjs message -> plain object
// ------------------------------------------------------------------------------------------------

/** Converts one decoded scalar; records a problem and returns undefined when it is unusable. */
function plainScalar(plan: FieldPlan, raw: unknown, path: string, problems: string[]): unknown {
  switch (plan.kind) {
    case KIND_ENUM: {
      const name = plan.enumType!.valuesById[raw as number];
      if (name === undefined) problems.push(`${path}: unknown ${plan.enumType!.name} value ${String(raw)}`);
      return name;
    }
    case KIND_BYTES:
      return new Uint8Array(raw as Uint8Array); // a private copy, not a view
    case KIND_FLOAT:
      if (!Number.isFinite(raw as number)) problems.push(`${path}: must be a finite number, got ${String(raw)}`);
      return raw;
    default:
      if (plan.long) {
        const n = typeof raw === "number" ? raw : longToNumber(raw);
        if (!Number.isSafeInteger(n)) problems.push(`${path}: integer ${String(raw)} is not exactly representable`);
        return n;
      }
      return raw;
  }
}

/**
 * A 64-bit integer as protobufjs decodes it (a Long, or a string without the long library) as a
 * number; NaN-free but possibly unsafe, which the caller reports. From the two 32-bit halves when
 * it is a Long: `Number(String(long))` formatted every timestamp on the bus as decimal first.
 */
function longToNumber(raw: unknown): number {
  if (typeof raw === "object" && raw !== null && typeof (raw as { low?: unknown }).low === "number") {
    const { low, high, unsigned } = raw as { low: number; high: number; unsigned: boolean };
    const n = (unsigned ? high >>> 0 : high) * 4294967296 + (low >>> 0);
    // Exact whenever the result is a safe integer; otherwise report the true value.
    return Number.isSafeInteger(n) ? n : Number(String(raw));
  }
  return Number(String(raw));
}

function plainValue(plan: FieldPlan, raw: unknown, path: string, problems: string[], rules: string[]): unknown {
  if (plan.kind === KIND_MESSAGE) return toPlain(plan.messageType!, raw as protobuf.Message, path, problems, rules);
  return plainScalar(plan, raw, path, problems);
}

/**
 * Turns a decoded protobufjs message into the plain shape described in types.ts: proto3 defaults
 * filled in, absent message fields left out, oneofs as discriminated unions; and checks it
 * (everything {@link checkMessage} checks of a plain object): values that cannot be converted go to
 * `problems`, broken required-field and cross-field rules to `rules`.
 */
function toPlain(type: protobuf.Type, message: protobuf.Message, path: string, problems: string[], rules: string[]): Plain {
  return toPlainFor(planOf(type))(message as unknown as Plain, path, problems, rules);
}

type ToPlain = (message: Plain, path: string, problems: string[], rules: string[]) => Plain;

/** The compiled conversion of a type (see {@link compileToPlain}); compiled on first use. */
function toPlainFor(plan: TypePlan): ToPlain {
  return (plan.compiled.toPlain ??= compileToPlain(plan));
}

/** A map or list field, converted element by element. */
function plainContainer(field: FieldPlan, raw: unknown, path: string, problems: string[], rules: string[]): unknown {
  const fieldPath = at(path, field.name);
  if (field.map) {
    const converted: Plain = {};
    if (raw) for (const k of Object.keys(raw)) converted[k] = plainValue(field, (raw as Plain)[k], atIndex(fieldPath, k), problems, rules);
    return converted;
  }
  const items = (raw ?? []) as unknown[];
  const converted = new Array<unknown>(items.length);
  for (let i = 0; i < items.length; i++) converted[i] = plainValue(field, items[i], atIndex(fieldPath, i), problems, rules);
  return converted;
}

/**
 * Words the problem of a oneof with several members set. protobufjs keeps only the last member it
 * parses, so this guards against a change of that rather than against senders.
 */
function severalMembers(plan: TypePlan, o: number, out: Plain, path: string, problems: string[]): void {
  const oneof = plan.oneofs[o]!;
  problems.push(`${at(path, oneof.name)}: several members set (${oneof.members.filter((m) => isPresent(out[m])).join(", ")})`);
}

/** Whether a decoded scalar needs converting or checking (else it is taken as it is). */
function scalarNeedsWork(field: FieldPlan): boolean {
  return field.kind === KIND_ENUM || field.kind === KIND_BYTES || field.kind === KIND_FLOAT || field.long;
}

/** A string as a JavaScript literal, for generated code. */
const lit = (text: string): string => JSON.stringify(text);

/**
 * Makes a function from generated source: `body` runs once with `scope`'s entries as its
 * variables (names from the schema only, never from messages) and returns the function.
 */
function generate<F>(scope: Record<string, unknown>, body: string): F {
  return new Function(...Object.keys(scope), body)(...Object.values(scope)) as F;
}

/**
 * Builds the conversion of one message type as its own function, for the reason given at
 * {@link compileCheck}: a generic walk read the fields of messages of every type and V8 could not
 * cache those reads. Presence matters for message fields and oneof members: only own, non-null
 * properties were on the wire (protobufjs keeps defaults on the prototype).
 */
function compileToPlain(plan: TypePlan): ToPlain {
  const lines: string[] = ["const out = {};", "let raw;"];
  plan.fields.forEach((field, i) => {
    const name = lit(field.name);
    lines.push(`raw = src[${name}];`);
    const value =
      field.kind === KIND_MESSAGE
        ? `(nested[${i}] ??= converterOf(fields[${i}].messageType))(raw, at(path, ${name}), problems, rules)`
        : scalarNeedsWork(field)
          ? `plainScalar(fields[${i}], raw, at(path, ${name}), problems)`
          : "raw";
    if (field.map || field.repeated) lines.push(`out[${name}] = plainContainer(fields[${i}], raw, path, problems, rules);`);
    else if (field.presence) lines.push(`if (raw !== undefined && raw !== null && hasOwn(src, ${name})) out[${name}] = ${value};`);
    else lines.push(`out[${name}] = ${value};`);
  });
  plan.oneofs.forEach((oneof, o) => {
    lines.push("{", "let count = 0, first;");
    for (const member of oneof.members) lines.push(`if (out[${lit(member)}] != null) { count++; first ??= ${lit(member)}; }`);
    lines.push(`if (count > 1) severalMembers(plan, ${o}, out, path, problems);`, `if (count >= 1) out[${lit(oneof.name)}] = first;`, "}");
  });
  // The field types were settled above (protobuf decoded them and each was converted), so only
  // the rules proto3 cannot express are left. Their problems are kept apart: a receiver reports
  // a wrong schema version or payload before them.
  lines.push(...requiredLines(plan, "rules"), "return out;");
  const scope = {
    plan,
    fields: plan.fields,
    required: plan.required,
    at,
    hasOwn: (o: object, key: string) => Object.prototype.hasOwnProperty.call(o, key),
    plainScalar,
    plainContainer,
    severalMembers,
    isEmptyValue,
    converterOf: (type: protobuf.Type) => toPlainFor(planOf(type)),
  };
  return generate<ToPlain>(scope, `const nested = [];\nreturn function toPlain(src, path, problems, rules) {\n${lines.join("\n")}\n};`);
}

// ------------------------------------------------------------------------------------------------
// Validation of plain objects (both directions)
// ------------------------------------------------------------------------------------------------

function isEmptyValue(field: protobuf.Field, value: unknown): boolean {
  if (!isPresent(value)) return true;
  if (field.repeated) return Array.isArray(value) && value.length === 0;
  if (field.map) return Object.keys(value as object).length === 0;
  if (typeof value === "string") {
    return value === "" || (field.resolvedType instanceof protobuf.Enum && value.endsWith("_UNSPECIFIED"));
  }
  if (value instanceof Uint8Array) return value.length === 0;
  if (typeof value === "number" && field.resolvedType instanceof protobuf.Enum) return value === 0;
  return false;
}

// Every message sent or received is checked, so the checks run from a plan made once per
// message type (field kinds resolved, oneofs and required fields listed) instead of asking
// protobufjs's reflection for each field of each message.
const KIND_MESSAGE = 0;
const KIND_ENUM = 1;
const KIND_STRING = 2;
const KIND_BOOL = 3;
const KIND_BYTES = 4;
const KIND_FLOAT = 5;
const KIND_INT = 6;
const KIND_UINT = 7;

interface FieldPlan {
  readonly name: string;
  readonly field: protobuf.Field;
  readonly map: boolean;
  readonly repeated: boolean;
  readonly kind: number;
  /** 64-bit integers: decoded as Long or string by protobufjs, converted to safe numbers. */
  readonly long: boolean;
  /** A message field or a oneof member: absent on the wire means absent, not the zero value. */
  readonly presence: boolean;
  /** Index in {@link TypePlan.oneofs} of the (real) oneof the field belongs to; -1 for none. */
  readonly oneof: number;
  readonly messageType: protobuf.Type | undefined;
  readonly enumType: protobuf.Enum | undefined;
}

interface TypePlan {
  readonly fields: readonly FieldPlan[];
  /** The same fields by name, for checks that walk a value's own keys. */
  readonly byName: ReadonlyMap<string, FieldPlan>;
  readonly oneofs: ReadonlyArray<{ readonly name: string; readonly members: readonly string[] }>;
  readonly required: ReadonlyArray<{ readonly name: string; readonly members: readonly string[] | undefined; readonly field: protobuf.Field | undefined }>;
  readonly rule: Rule | undefined;
  /** The type's generated functions, made on first use. */
  readonly compiled: { check?: Check; toPlain?: ToPlain };
}

const plans = new WeakMap<protobuf.Type, TypePlan>();

function fieldKind(field: protobuf.Field): number {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) return KIND_MESSAGE;
  if (resolved instanceof protobuf.Enum) return KIND_ENUM;
  switch (field.type) {
    case "string":
      return KIND_STRING;
    case "bool":
      return KIND_BOOL;
    case "bytes":
      return KIND_BYTES;
    default:
      if (FLOAT_TYPES.has(field.type)) return KIND_FLOAT;
      return UNSIGNED_TYPES.has(field.type) ? KIND_UINT : KIND_INT;
  }
}

function planOf(type: protobuf.Type): TypePlan {
  let plan = plans.get(type);
  if (plan !== undefined) return plan;
  const name = shortName(type);
  const oneofs = realOneofs(type);
  const fields: FieldPlan[] = type.fieldsArray.map((field) => ({
    name: field.name,
    field,
    map: field.map,
    repeated: field.repeated,
    kind: fieldKind(field),
    long: LONG_TYPES.has(field.type),
    presence: field.partOf !== null || field.resolvedType instanceof protobuf.Type,
    oneof: field.partOf === null ? -1 : oneofs.indexOf(field.partOf),
    messageType: field.resolvedType instanceof protobuf.Type ? field.resolvedType : undefined,
    enumType: field.resolvedType instanceof protobuf.Enum ? field.resolvedType : undefined,
  }));
  plan = {
    fields,
    byName: new Map(fields.map((f) => [f.name, f])),
    oneofs: oneofs.map((oneof) => ({ name: oneof.name, members: oneof.fieldsArray.map((f) => f.name) })),
    required: (REQUIRED[name] ?? []).map((required) => {
      const oneof = type.oneofs?.[required];
      return { name: required, members: oneof ? oneof.fieldsArray.map((f) => f.name) : undefined, field: oneof ? undefined : type.fields[required] };
    }),
    rule: CROSS_FIELD_RULES[name],
    compiled: {},
  };
  plans.set(type, plan);
  return plan;
}

/** Checks a scalar a sender put in a plain object (types are not guaranteed at runtime). */
function checkScalar(plan: FieldPlan, value: unknown, path: string, problems: string[]): void {
  if (value === undefined || value === null) return;
  switch (plan.kind) {
    case KIND_ENUM:
      // `values` maps names to numbers, but its prototype is protobufjs's number-to-name table: a
      // numeric string such as "3" is found there, and fromObject then drops it as unknown.
      if (typeof value !== "string" || typeof plan.enumType!.values[value] !== "number") {
        problems.push(`${path}: unknown ${plan.enumType!.name} value ${JSON.stringify(value)}`);
      }
      return;
    case KIND_STRING:
      if (typeof value !== "string") problems.push(`${path}: must be a string`);
      return;
    case KIND_BOOL:
      if (typeof value !== "boolean") problems.push(`${path}: must be a boolean`);
      return;
    case KIND_BYTES:
      if (!(value instanceof Uint8Array)) problems.push(`${path}: must be a Uint8Array`);
      return;
    default:
      if (typeof value !== "number" || !Number.isFinite(value)) {
        problems.push(`${path}: must be a finite number`);
      } else if (plan.kind !== KIND_FLOAT) {
        if (!Number.isSafeInteger(value)) problems.push(`${path}: must be a (safe) integer`);
        else if (plan.kind === KIND_UINT && value < 0) problems.push(`${path}: must not be negative`);
        // protobufjs would cut a 32-bit field's value down to 32 bits without a word.
        else if (!plan.long && plan.kind === KIND_UINT && value > UINT32_MAX) problems.push(`${path}: must be at most ${UINT32_MAX} (uint32)`);
        else if (!plan.long && plan.kind === KIND_INT && (value < INT32_MIN || value > INT32_MAX)) {
          problems.push(`${path}: must be within ${INT32_MIN}..${INT32_MAX} (int32)`);
        }
      }
  }
}

function checkValue(plan: FieldPlan, value: unknown, path: string, problems: string[]): void {
  if (plan.kind === KIND_MESSAGE) {
    if (value !== undefined && value !== null) {
      if (typeof value === "object") checkFor(planOf(plan.messageType!))(value as Plain, path, problems);
      else problems.push(`${path}: must be a ${plan.messageType!.name} object`);
    }
    return;
  }
  checkScalar(plan, value, path, problems);
}

/** Appends to `problems` every rule `value` breaks as a `type`. */
function checkMessage(type: protobuf.Type, value: Plain, path: string, problems: string[]): void {
  checkFor(planOf(type))(value, path, problems);
}

/** The compiled check of a type; compiled on first use (a nested type's when first met). */
function checkFor(plan: TypePlan): Check {
  return (plan.compiled.check ??= compileCheck(plan));
}

type Check = (value: Plain, path: string, problems: string[]) => void;

/**
 * A field of a map or a list: the container's shape first, then each element. An element cannot
 * be absent (protobuf has no null in a list or a map; protobufjs would send "null" for a string).
 */
function checkContainer(field: FieldPlan, v: unknown, path: string, problems: string[]): void {
  const fieldPath = at(path, field.name);
  if (field.map) {
    if (typeof v !== "object" || Array.isArray(v)) problems.push(`${fieldPath}: must be an object`);
    else for (const k in v) checkElement(field, (v as Plain)[k], atIndex(fieldPath, k), problems);
  } else if (!Array.isArray(v)) {
    problems.push(`${fieldPath}: must be an array`);
  } else {
    for (let i = 0; i < v.length; i++) checkElement(field, v[i], atIndex(fieldPath, i), problems);
  }
}

function checkElement(field: FieldPlan, element: unknown, path: string, problems: string[]): void {
  if (element === undefined || element === null) problems.push(`${path}: must not be ${String(element)}`);
  else checkValue(field, element, path, problems);
}

/** The oneof problems of a message whose members of oneof `o` were counted as `count`. */
function checkOneof(plan: TypePlan, o: number, count: number, value: Plain, path: string, problems: string[]): void {
  const oneof = plan.oneofs[o]!;
  const declared = value[oneof.name];
  if (count > 1) {
    const set = oneof.members.filter((member) => isPresent(value[member]));
    problems.push(`${at(path, oneof.name)}: several members set (${set.join(", ")})`);
  } else if (isPresent(declared) && (typeof declared !== "string" || count === 0 || !isPresent(value[declared]) || plan.byName.get(declared)?.oneof !== o)) {
    const first = oneof.members.find((member) => isPresent(value[member]));
    problems.push(`${at(path, oneof.name)}: says ${JSON.stringify(declared)} but ${first ?? "no member"} is set`);
  }
}

/**
 * Generated code for the required fields and the cross-field rule of a type, appending to the
 * array named `target` (the rules of {@link REQUIRED} and {@link CROSS_FIELD_RULES}). Reads `value` or, in a
 * conversion, `out`; uses the scratch variable `x`.
 */
function requiredLines(plan: TypePlan, target: "problems" | "rules"): string[] {
  const subject = target === "rules" ? "out" : "value";
  const lines: string[] = target === "rules" ? ["let x;"] : [];
  plan.required.forEach((required, r) => {
    const name = lit(required.name);
    if (required.members) {
      const absent = required.members.map((m) => `${subject}[${lit(m)}] == null`).join(" && ");
      lines.push(`if (${absent}) ${target}.push(at(path, ${name}) + ": must be set");`);
    } else if (required.field) {
      const plainString = required.field.type === "string" && !required.field.repeated && !required.field.map;
      const empty = plainString ? `(x = ${subject}[${name}]) == null || x === ""` : `isEmptyValue(required[${r}].field, ${subject}[${name}])`;
      lines.push(`if (${empty}) ${target}.push(at(path, ${name}) + ": must not be empty");`);
    }
  });
  if (plan.rule) lines.push(`plan.rule(${subject}, path, ${target});`);
  return lines;
}

/**
 * Builds the check of one message type as its own function. Every message sent is checked, and
 * one generic walk over objects of every type was slow: its property reads (and the `for...in`
 * it used instead) saw so many object shapes that V8 could not cache them, so each field cost a
 * dictionary lookup. A function per type reads its fields by name and caches per type, the way
 * protobufjs's own generated encoders do. Names in the code come from the schema only. The usual
 * outcomes (a string field, a oneof with its discriminator and one member, a required field
 * present) are decided inline; anything else goes to the generic helpers, which also word the
 * problems.
 */
function compileCheck(plan: TypePlan): Check {
  const lines: string[] = ["let x;"];
  plan.oneofs.forEach((_, o) => lines.push(`let c${o} = 0;`));
  plan.fields.forEach((field, i) => {
    const name = lit(field.name);
    lines.push(`x = value[${name}];`, "if (x !== undefined && x !== null) {");
    if (field.oneof >= 0) lines.push(`  c${field.oneof}++;`);
    if (field.map || field.repeated) lines.push(`  checkContainer(fields[${i}], x, path, problems);`);
    else if (field.kind === KIND_STRING) lines.push(`  if (typeof x !== "string") problems.push(at(path, ${name}) + ": must be a string");`);
    else if (field.kind === KIND_MESSAGE) {
      lines.push(`  if (typeof x === "object") (nested[${i}] ??= checkOf(fields[${i}].messageType))(x, at(path, ${name}), problems);`);
      lines.push(`  else checkValue(fields[${i}], x, at(path, ${name}), problems);`);
    } else lines.push(`  checkValue(fields[${i}], x, at(path, ${name}), problems);`);
    lines.push("}");
  });
  plan.oneofs.forEach((oneof, o) => {
    // Valid: one member set, and the discriminator absent or naming that member.
    const named = oneof.members.map((m) => `(x === ${lit(m)} && value[${lit(m)}] != null)`).join(" || ");
    lines.push(`x = value[${lit(oneof.name)}];`, `if (c${o} !== 1 || !(x == null || ${named})) checkOneof(plan, ${o}, c${o}, value, path, problems);`);
  });
  lines.push(...requiredLines(plan, "problems"));
  const scope = {
    plan,
    fields: plan.fields,
    required: plan.required,
    at,
    checkValue,
    checkContainer,
    checkOneof,
    isEmptyValue,
    checkOf: (type: protobuf.Type) => checkFor(planOf(type)),
  };
  return generate<Check>(scope, `const nested = [];\nreturn function check(value, path, problems) {\n${lines.join("\n")}\n};`);
}

// ------------------------------------------------------------------------------------------------
// Generic message encode/decode
// ------------------------------------------------------------------------------------------------

/** Messages that may be encoded on their own (e.g. to persist them in a JetStream KV store). */
export interface WireMessages {
  Envelope: Envelope;
  FrameworkInfo: FrameworkInfo;
  AgentInfo: AgentInfo;
  MasterInfo: MasterInfo;
  TaskInfo: TaskInfo;
  TaskStatus: TaskStatus;
  Offer: Offer;
  Resource: Resource;
  CallResponse: CallResponse;
}
export type WireMessageName = keyof WireMessages;

const typeCache = new Map<string, protobuf.Type>();
function typeOf(name: string): protobuf.Type {
  let type = typeCache.get(name);
  if (type === undefined) {
    type = lookupType(name);
    typeCache.set(name, type);
  }
  return type;
}

/**
 * An envelope handed over inside one process: it carries the checked, converted protobufjs message
 * rather than the message's bytes (see {@link EnvelopeDestination.inProcess}). Decoding it converts the
 * carried message into a fresh plain object for each receiver and checks every rule, as for bytes;
 * what it skips is protobuf's serialization and parsing (without them a simulation of 10,000
 * agents ran in 101-110 s instead of 119-132 s). A `bytes` field is the sender's own array until
 * a receiver's decode copies it, so a sender must not change one after sending (none does).
 *
 * Its own content is one byte no protobuf decoder accepts (wire type 7): one that strayed onto a
 * real bus would be dropped as a decode error, never misread.
 */
class InProcessEnvelope extends Uint8Array {
  static get [Symbol.species](): Uint8ArrayConstructor {
    return Uint8Array; // a slice or a view of one is plain bytes
  }

  constructor(readonly message: protobuf.Message) {
    super(1);
    this[0] = 0xff;
  }
}

/** Checks `value` as a `type` and converts it into a protobufjs message, ready to serialize. */
function checkedMessage(type: protobuf.Type, value: Plain): protobuf.Message {
  const { problems } = withPathsOnFailure((found) => checkMessage(type, value, "", found));
  if (problems.length > 0) throw new WireError("invalid", problems);
  return type.fromObject(value);
}

function serialize(type: protobuf.Type, message: protobuf.Message): Uint8Array {
  // A fresh writer per message, on purpose. One shared writer (copying each message out) made
  // encoding 10% faster but raised a 10,000-agent simulation's peak RSS from 2,040-2,342 to
  // 2,489-2,616 MiB, with no wall-time gain that runs on this noisy machine could show: the
  // garbage of fresh writers seems to pace V8's collections.
  return type.encode(message).finish();
}

function parse(type: protobuf.Type, bytes: Uint8Array): protobuf.Message {
  try {
    return type.decode(bytes);
  } catch (err) {
    throw new WireError("decode_error", [`not a valid ${type.name}: ${err instanceof Error ? err.message : String(err)}`], {
      cause: err,
    });
  }
}

function carriedMessage(type: protobuf.Type, envelope: InProcessEnvelope): protobuf.Message {
  const carried = envelope.message.$type;
  if (carried !== type) throw new WireError("decode_error", [`not a valid ${type.name}: an in-process ${carried.name}`]);
  return envelope.message;
}

/**
 * Decodes and checks `bytes` as a `type`; throws on bytes that are not one or values that cannot
 * be converted, and returns the broken rules (required fields, cross-field rules) for the caller
 * to report after its own checks.
 */
function decodeWith(type: protobuf.Type, bytes: Uint8Array): { plain: Plain; rules: string[] } {
  if (!(bytes instanceof Uint8Array)) throw new WireError("decode_error", ["input: must be a Uint8Array"]);
  const message = bytes instanceof InProcessEnvelope ? carriedMessage(type, bytes) : parse(type, bytes);
  const { result: plain, problems, rules } = withPathsOnFailure((found, broken) => toPlain(type, message, "", found, broken));
  if (problems.length > 0) throw new WireError("invalid", problems);
  return { plain, rules };
}


/**
 * Encodes a standalone message such as a `FrameworkInfo` for storage.
 * @throws {WireError} when `value` breaks a field rule.
 */
export function encodeMessage<N extends WireMessageName>(name: N, value: WireMessages[N]): Uint8Array {
  const type = typeOf(name);
  return serialize(type, checkedMessage(type, value as unknown as Plain));
}

/**
 * Decodes and validates a standalone message encoded with {@link encodeMessage}.
 * @throws {WireError}
 */
export function decodeMessage<N extends WireMessageName>(name: N, bytes: Uint8Array): WireMessages[N] {
  const { plain, rules } = decodeWith(typeOf(name), bytes);
  if (rules.length > 0) throw new WireError("invalid", rules);
  return plain as unknown as WireMessages[N];
}

/** Checks a plain object against the rules of message `name`; returns the problems found. */
export function validateMessage(name: WireMessageName, value: unknown): string[] {
  if (typeof value !== "object" || value === null) return ["value: must be an object"];
  const problems: string[] = [];
  checkMessage(typeOf(name), value as Plain, "", problems);
  return problems;
}

// ------------------------------------------------------------------------------------------------
// Envelopes
// ------------------------------------------------------------------------------------------------

/** What a sender provides; the codec fills in the schema version. */
export type EnvelopeInput = {
  senderId: string;
  /** @default 0 (non-masters) */
  epoch?: number;
  /** @default "" */
  callId?: string;
  /** Only for tests of version handling. @default SCHEMA_VERSION */
  schemaVersion?: number;
} & EnvelopePayload;

/**
 * Where an envelope goes, as far as encoding cares; a {@link Transport} is one, so a sender passes
 * the transport it is about to use.
 */
export interface EnvelopeDestination {
  /**
   * The envelope goes to a transport whose messages never leave this process
   * ({@link Transport.inProcess}, the simulator's network): hand over the checked, converted
   * message instead of serializing it. The result decodes like bytes, with the same rules and a
   * fresh object per receiver, but only in this process; a real bus drops it as a decode error.
   * @default false
   */
  readonly inProcess?: boolean;
}

/**
 * Encodes an envelope for `destination` (the transport it will be sent on, or nothing for bytes).
 * @throws {WireError} (reason `invalid`) when a field rule is broken: a bug in the sender.
 */
export function encodeEnvelope(input: EnvelopeInput, destination?: EnvelopeDestination): Uint8Array {
  // The input itself is checked and converted (no copy with the defaults filled in: copying the
  // caller's object cost more than encoding it); an absent epoch or call id is proto3's zero.
  const message = checkedMessage(EnvelopeType, input as unknown as Plain) as protobuf.Message & { schemaVersion?: number };
  if (input.schemaVersion === undefined) message.schemaVersion = SCHEMA_VERSION;
  return destination?.inProcess === true ? new InProcessEnvelope(message) : serialize(EnvelopeType, message);
}

/**
 * The size in bytes of an encoded envelope on a real bus: its length, or for one handed over in
 * process the length of its serialization (computed here, so only callers that need a size pay).
 */
export function wireLength(encoded: Uint8Array): number {
  if (!(encoded instanceof InProcessEnvelope)) return encoded.length;
  return EnvelopeType.encode(encoded.message).len;
}

/** Options of {@link safeDecode} and {@link handleSafely}. */
export interface DecodeOptions<K extends PayloadKind = PayloadKind> {
  /**
   * Payload kinds to accept. By default a table subject accepts its own kinds
   * (`SUBJECTS[...].payloads`), a reply inbox accepts reply kinds and any other subject accepts all.
   * @default from the subject
   */
  expect?: readonly K[];
}

/** Result of {@link safeDecode}. */
export type DecodeResult<K extends PayloadKind = PayloadKind> =
  | { ok: true; envelope: EnvelopeOf<K> }
  | { ok: false; error: WireError };

/** What a subject of the table lets arrive on it. */
interface SubjectRules {
  readonly kinds: readonly PayloadKind[];
  /** The only sender id allowed, on a subject whose publishers speak for its id only. */
  readonly sender: string | undefined;
}

const INBOX_RULES: SubjectRules = { kinds: REPLY_PAYLOADS, sender: undefined };

/**
 * Rules by subject: parsing the subject of every message received cost a tenth of a decode. A
 * process sees few subjects (the master one per agent, the simulator, with every agent in one
 * process, a few per agent) and inboxes are not kept, so a plain map that starts over when full
 * is enough (an LRU's bookkeeping cost more than the parse it saved).
 */
const rulesBySubject = new Map<string, SubjectRules>();
const MAX_CACHED_SUBJECTS = 65_536;

function subjectRules(subject: string): SubjectRules {
  if (subject.startsWith("_INBOX.")) return INBOX_RULES; // never a table subject (those start with the root)
  let rules = rulesBySubject.get(subject);
  if (rules === undefined) {
    const parsed = parseSubject(subject);
    rules = { kinds: parsed?.spec.payloads ?? PAYLOAD_KINDS, sender: parsed?.spec.senderIsId === true ? parsed.id : undefined };
    if (rulesBySubject.size >= MAX_CACHED_SUBJECTS) rulesBySubject.clear();
    rulesBySubject.set(subject, rules);
  }
  return rules;
}

/**
 * Decodes and validates an envelope that arrived on `subject`. Never throws: garbage, a wrong
 * schema version, a missing or misplaced payload and broken field rules all come back as
 * `{ ok: false, error }` with the {@link DropReason} in `error.reason`.
 */
export function safeDecode<K extends PayloadKind = PayloadKind>(
  subject: string,
  bytes: Uint8Array,
  options?: DecodeOptions<K>,
): DecodeResult<K> {
  try {
    const { plain, rules } = decodeWith(EnvelopeType, bytes);
    // From here on the bytes are an envelope: a refusal carries its call id.
    const version = plain.schemaVersion as number;
    if (version < MIN_SCHEMA_VERSION || version > SCHEMA_VERSION) {
      const supported = MIN_SCHEMA_VERSION === SCHEMA_VERSION ? `${SCHEMA_VERSION}` : `${MIN_SCHEMA_VERSION}..${SCHEMA_VERSION}`;
      throw new WireError("schema_version", [`schemaVersion: ${version} is not supported (supported: ${supported})`], refusalOf(plain));
    }
    const kind = plain.payload as PayloadKind | undefined;
    if (kind === undefined) throw new WireError("missing_payload", ["payload: must be set"], refusalOf(plain));
    const subjectRule = subjectRules(subject);
    const accepted = options?.expect ?? subjectRule.kinds;
    if (!accepted.includes(kind)) {
      throw new WireError("wrong_payload", [`payload: ${kind} is not accepted on ${subject} (expected ${accepted.join(" | ")})`], refusalOf(plain));
    }
    if (subjectRule.sender !== undefined && plain.senderId !== subjectRule.sender) {
      const problem = `senderId: '${String(plain.senderId)}' may not publish on ${subject}, which is for '${subjectRule.sender}' only`;
      throw new WireError("wrong_sender", [problem], refusalOf(plain));
    }
    if (rules.length > 0) throw new WireError("invalid", rules, refusalOf(plain));
    return { ok: true, envelope: plain as unknown as EnvelopeOf<K> };
  } catch (err) {
    const error =
      err instanceof WireError
        ? err
        : new WireError("decode_error", [err instanceof Error ? err.message : String(err)], { cause: err });
    return { ok: false, error };
  }
}

/**
 * Decodes an envelope or throws; for callers that have already decided a bad message is fatal
 * (tests, tools). Bus handlers use {@link safeDecode} or {@link handleSafely}.
 * @throws {WireError}
 */
export function decodeEnvelope<K extends PayloadKind = PayloadKind>(
  subject: string,
  bytes: Uint8Array,
  options?: DecodeOptions<K>,
): EnvelopeOf<K> {
  const result = safeDecode(subject, bytes, options);
  if (!result.ok) throw result.error;
  return result.envelope;
}

// ------------------------------------------------------------------------------------------------
// Drops: counting and logging
// ------------------------------------------------------------------------------------------------

/** One counter of {@link DropCounter}. */
export interface DropCount {
  /** {@link subjectKind} of the subject, e.g. `"agent.cmd"`. */
  kind: string;
  reason: DropReason;
  count: number;
}

/**
 * Counts dropped messages by subject kind and {@link DropReason}. Both label sets are closed (the
 * subject table plus "reply"/"unknown", and the reasons), so the counter's size is bounded no
 * matter what arrives.
 */
export class DropCounter {
  private readonly counts = new Map<string, DropCount>();

  /** Counts one drop of a message on `subject`; returns the new count for its kind and reason. */
  record(subject: string, reason: DropReason): number {
    const kind = subjectKind(subject);
    const key = `${kind}\u0000${reason}`;
    let entry = this.counts.get(key);
    if (entry === undefined) {
      entry = { kind, reason, count: 0 };
      this.counts.set(key, entry);
    }
    entry.count += 1;
    return entry.count;
  }

  /** The count for one kind and reason, or summed over whichever is omitted. */
  count(filter: { kind?: string; reason?: DropReason } = {}): number {
    let sum = 0;
    for (const e of this.counts.values()) {
      if ((filter.kind === undefined || e.kind === filter.kind) && (filter.reason === undefined || e.reason === filter.reason)) {
        sum += e.count;
      }
    }
    return sum;
  }

  /** A copy of all non-zero counters, sorted by kind then reason. */
  snapshot(): DropCount[] {
    return [...this.counts.values()]
      .map((e) => ({ ...e }))
      .sort((a, b) => a.kind.localeCompare(b.kind) || a.reason.localeCompare(b.reason));
  }

  /**
   * The counters in Prometheus text exposition format.
   * @param metric metric name. @default "corral_bus_dropped_messages_total"
   */
  toPrometheus(metric = "corral_bus_dropped_messages_total"): string {
    const lines = [
      `# HELP ${metric} Bus messages dropped because they could not be decoded, validated or handled.`,
      `# TYPE ${metric} counter`,
    ];
    for (const e of this.snapshot()) lines.push(`${metric}{kind="${e.kind}",reason="${e.reason}"} ${e.count}`);
    return `${lines.join("\n")}\n`;
  }
}

/** What a refused envelope tells about itself (built only when refusing: decoding runs for every message). */
function refusalOf(plain: Record<string, unknown>): { callId: string | undefined } {
  return { callId: typeof plain.callId === "string" ? plain.callId : undefined };
}

/** Options of {@link handleSafely}. */
export interface HandleOptions<K extends PayloadKind = PayloadKind> extends DecodeOptions<K> {
  /**
   * Called, after the drop is counted and logged, for a message that decoded as an envelope but is
   * refused (a wrong version or payload, or a broken field rule): a request may be answered with
   * the reason. Bytes that are no envelope are only dropped.
   */
  onRefused?: (error: WireError, msg: IncomingMessage) => void;
}

/** Handler of decoded envelopes, see {@link handleSafely}. */
export type EnvelopeHandler<K extends PayloadKind = PayloadKind> = (
  envelope: EnvelopeOf<K>,
  msg: IncomingMessage,
) => void | Promise<void>;

/** Logs the 1st, 2nd, 4th, 8th... drop of a kind/reason so a flood of garbage cannot flood the log. */
function shouldLog(count: number): boolean {
  return (count & (count - 1)) === 0;
}

/**
 * Wraps an envelope handler into a transport {@link MessageHandler}: decodes and validates each
 * message with {@link safeDecode}, calls `handler` with the envelope, and turns every failure (bad
 * message, thrown exception, rejected promise) into a counted, logged drop. Nothing escapes.
 */
export function handleSafely<K extends PayloadKind = PayloadKind>(
  log: Logger,
  counter: DropCounter,
  handler: EnvelopeHandler<K>,
  options?: HandleOptions<K>,
): MessageHandler {
  const failed = (msg: IncomingMessage, err: unknown) => {
    const count = counter.record(msg.subject, "handler_error");
    if (shouldLog(count)) log.error({ err, subject: msg.subject, dropped: count }, "bus handler failed");
  };
  return (msg) => {
    const result = safeDecode<K>(msg.subject, msg.data, options);
    if (!result.ok) {
      const count = counter.record(msg.subject, result.error.reason);
      if (shouldLog(count)) {
        log.warn(
          { subject: msg.subject, reason: result.error.reason, problems: result.error.problems, dropped: count },
          "dropped bus message",
        );
      }
      if (options?.onRefused !== undefined && result.error.callId !== undefined) {
        try {
          options.onRefused(result.error, msg);
        } catch (err) {
          failed(msg, err);
        }
      }
      return;
    }
    try {
      const pending = handler(result.envelope, msg);
      if (pending !== undefined && typeof pending.then === "function") pending.then(undefined, (err) => failed(msg, err));
    } catch (err) {
      failed(msg, err);
    }
  };
}
