/**
 * Encoding and decoding of the wire contract (`sdk/proto/corral.proto`), plus the guard every bus
 * handler sits behind.
 *
 * Decoding is strict because everything on the bus crosses a trust boundary: unknown enum values,
 * integers JavaScript cannot represent exactly, non-finite numbers, several members of one oneof,
 * missing required fields (see {@link REQUIRED}) and payloads that do not belong on the subject all
 * make a message invalid. Encoding applies the same rules, so a message this codec sends is one it
 * would accept.
 *
 * @module
 */

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import type { IncomingMessage, Logger, MessageHandler } from "../transport.ts";
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
  /** Decoded, but breaks a field rule. */
  | "invalid"
  /** Valid, but the handler threw. */
  | "handler_error";

export const DROP_REASONS: readonly DropReason[] = [
  "decode_error",
  "schema_version",
  "missing_payload",
  "wrong_payload",
  "invalid",
  "handler_error",
];

/** A message that cannot be decoded or encoded. `problems` name the field and the rule broken. */
export class WireError extends Error {
  readonly reason: DropReason;
  readonly problems: readonly string[];
  constructor(reason: DropReason, problems: readonly string[], options?: { cause?: unknown }) {
    super(`${reason}: ${problems.join("; ")}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "WireError";
    this.reason = reason;
    this.problems = problems;
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

/** Rules that relate several fields, by message name. */
const CROSS_FIELD_RULES: Readonly<Record<string, Rule>> = {
  Range: (v, path, problems) => {
    if (typeof v.begin === "number" && typeof v.end === "number" && v.begin > v.end) {
      problems.push(`${at(path, "begin")}: must be <= end (${v.begin} > ${v.end})`);
    }
  },
  SchedulerCall: (v, path, problems) => {
    // Every call but the first SUBSCRIBE names its framework.
    if (v.kind !== undefined && v.kind !== "subscribe" && !v.frameworkId) {
      problems.push(`${at(path, "frameworkId")}: must not be empty for ${String(v.kind)}`);
    }
  },
  "AgentToMaster.Reregister": (v, path, problems) => {
    const info = v.agentInfo as Plain | undefined;
    if (info && !info.id) problems.push(`${at(path, "agentInfo.id")}: must not be empty when re-registering`);
  },
  CallResponse: (v, path, problems) => {
    if (v.ok === false && !v.errorCode) problems.push(`${at(path, "errorCode")}: must not be empty when ok is false`);
  },
};

// ------------------------------------------------------------------------------------------------
// Reflection helpers
// ------------------------------------------------------------------------------------------------

const LONG_TYPES = new Set(["int64", "uint64", "sint64", "fixed64", "sfixed64"]);
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

/** Runs `check` without paths; if it finds problems, runs it again with paths for the messages. */
function withPathsOnFailure<T>(check: (problems: string[]) => T): { result: T; problems: string[] } {
  const quick: string[] = [];
  pathsOff = true;
  let result: T;
  try {
    result = check(quick);
  } finally {
    pathsOff = false;
  }
  if (quick.length === 0) return { result, problems: quick };
  const detailed: string[] = [];
  return { result: check(detailed), problems: detailed };
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
function plainScalar(field: protobuf.Field, raw: unknown, path: string, problems: string[]): unknown {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Enum) {
    const name = resolved.valuesById[raw as number];
    if (name === undefined) problems.push(`${path}: unknown ${resolved.name} value ${String(raw)}`);
    return name;
  }
  if (LONG_TYPES.has(field.type)) {
    const n = typeof raw === "number" ? raw : Number(String(raw));
    if (!Number.isSafeInteger(n)) problems.push(`${path}: integer ${String(raw)} is not exactly representable`);
    return n;
  }
  if (field.type === "bytes") return new Uint8Array(raw as Uint8Array); // a private copy, not a view
  if (FLOAT_TYPES.has(field.type) && !Number.isFinite(raw as number)) {
    problems.push(`${path}: must be a finite number, got ${String(raw)}`);
  }
  return raw;
}

function plainValue(field: protobuf.Field, raw: unknown, path: string, problems: string[]): unknown {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) return toPlain(resolved, raw as protobuf.Message, path, problems);
  return plainScalar(field, raw, path, problems);
}

/**
 * Turns a decoded protobufjs message into the plain shape described in types.ts: proto3 defaults
 * filled in, absent message fields left out, oneofs as discriminated unions.
 */
function toPlain(type: protobuf.Type, message: protobuf.Message, path: string, problems: string[]): Plain {
  const src = message as unknown as Record<string, unknown>;
  const out: Plain = {};
  for (const field of type.fieldsArray) {
    const name = field.name;
    const fieldPath = at(path, name);
    const raw = src[name];
    if (field.map) {
      const entries = Object.entries((raw ?? {}) as Record<string, unknown>);
      out[name] = Object.fromEntries(entries.map(([k, v]) => [k, plainValue(field, v, atIndex(fieldPath, k), problems)]));
    } else if (field.repeated) {
      const items = (raw ?? []) as unknown[];
      out[name] = items.map((v, i) => plainValue(field, v, atIndex(fieldPath, i), problems));
    } else if (field.partOf !== null || field.resolvedType instanceof protobuf.Type) {
      // Presence matters: only own, non-null properties were on the wire.
      if (Object.prototype.hasOwnProperty.call(src, name) && isPresent(raw)) {
        out[name] = plainValue(field, raw, fieldPath, problems);
      }
    } else {
      out[name] = plainScalar(field, raw, fieldPath, problems);
    }
  }
  for (const oneof of realOneofs(type)) {
    const set = oneof.fieldsArray.filter((f) => isPresent(out[f.name])).map((f) => f.name);
    if (set.length > 1) problems.push(`${at(path, oneof.name)}: several members set (${set.join(", ")})`);
    if (set.length >= 1) out[oneof.name] = set[0];
  }
  return out;
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

/** Checks a scalar a sender put in a plain object (types are not guaranteed at runtime). */
function checkScalar(field: protobuf.Field, value: unknown, path: string, problems: string[]): void {
  if (!isPresent(value)) return;
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Enum) {
    if (typeof value !== "string" || resolved.values[value] === undefined) {
      problems.push(`${path}: unknown ${resolved.name} value ${JSON.stringify(value)}`);
    }
    return;
  }
  switch (field.type) {
    case "string":
      if (typeof value !== "string") problems.push(`${path}: must be a string`);
      return;
    case "bool":
      if (typeof value !== "boolean") problems.push(`${path}: must be a boolean`);
      return;
    case "bytes":
      if (!(value instanceof Uint8Array)) problems.push(`${path}: must be a Uint8Array`);
      return;
    default:
      if (typeof value !== "number" || !Number.isFinite(value)) {
        problems.push(`${path}: must be a finite number`);
      } else if (!FLOAT_TYPES.has(field.type)) {
        if (!Number.isSafeInteger(value)) problems.push(`${path}: must be a (safe) integer`);
        else if (UNSIGNED_TYPES.has(field.type) && value < 0) problems.push(`${path}: must not be negative`);
      }
  }
}

function checkValue(field: protobuf.Field, value: unknown, path: string, problems: string[]): void {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) {
    if (isPresent(value)) {
      if (typeof value === "object") checkMessage(resolved, value as Plain, path, problems);
      else problems.push(`${path}: must be a ${resolved.name} object`);
    }
    return;
  }
  checkScalar(field, value, path, problems);
}

/** Appends to `problems` every rule `value` breaks as a `type`. */
function checkMessage(type: protobuf.Type, value: Plain, path: string, problems: string[]): void {
  for (const field of type.fieldsArray) {
    const v = value[field.name];
    const fieldPath = at(path, field.name);
    if (field.map) {
      if (!isPresent(v)) continue;
      if (typeof v !== "object" || v === null || Array.isArray(v)) problems.push(`${fieldPath}: must be an object`);
      else for (const [k, item] of Object.entries(v)) checkValue(field, item, atIndex(fieldPath, k), problems);
    } else if (field.repeated) {
      if (!isPresent(v)) continue;
      if (!Array.isArray(v)) problems.push(`${fieldPath}: must be an array`);
      else for (let i = 0; i < v.length; i++) checkValue(field, v[i], atIndex(fieldPath, i), problems);
    } else {
      checkValue(field, v, fieldPath, problems);
    }
  }
  for (const oneof of realOneofs(type)) {
    const set = oneof.fieldsArray.filter((f) => isPresent(value[f.name])).map((f) => f.name);
    const declared = value[oneof.name];
    if (set.length > 1) problems.push(`${at(path, oneof.name)}: several members set (${set.join(", ")})`);
    else if (isPresent(declared) && set[0] !== declared) {
      problems.push(`${at(path, oneof.name)}: says ${JSON.stringify(declared)} but ${set[0] ?? "no member"} is set`);
    }
  }
  const name = shortName(type);
  for (const required of REQUIRED[name] ?? []) {
    const oneof = type.oneofs?.[required];
    if (oneof) {
      if (!oneof.fieldsArray.some((f) => isPresent(value[f.name]))) problems.push(`${at(path, required)}: must be set`);
      continue;
    }
    const field = type.fields[required];
    if (field && isEmptyValue(field, value[required])) problems.push(`${at(path, required)}: must not be empty`);
  }
  CROSS_FIELD_RULES[name]?.(value, path, problems);
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

function encodeWith(type: protobuf.Type, value: Plain): Uint8Array {
  const { problems } = withPathsOnFailure((found) => checkMessage(type, value, "", found));
  if (problems.length > 0) throw new WireError("invalid", problems);
  return type.encode(type.fromObject(value)).finish();
}

function decodeWith(type: protobuf.Type, bytes: Uint8Array): Plain {
  if (!(bytes instanceof Uint8Array)) throw new WireError("decode_error", ["input: must be a Uint8Array"]);
  let message: protobuf.Message;
  try {
    message = type.decode(bytes);
  } catch (err) {
    throw new WireError("decode_error", [`not a valid ${type.name}: ${err instanceof Error ? err.message : String(err)}`], {
      cause: err,
    });
  }
  const { result: plain, problems } = withPathsOnFailure((found) => toPlain(type, message, "", found));
  if (problems.length > 0) throw new WireError("invalid", problems);
  return plain;
}

function validateAs(type: protobuf.Type, plain: Plain): Plain {
  const { problems } = withPathsOnFailure((found) => checkMessage(type, plain, "", found));
  if (problems.length > 0) throw new WireError("invalid", problems);
  return plain;
}

/**
 * Encodes a standalone message such as a `FrameworkInfo` for storage.
 * @throws {WireError} when `value` breaks a field rule.
 */
export function encodeMessage<N extends WireMessageName>(name: N, value: WireMessages[N]): Uint8Array {
  return encodeWith(typeOf(name), value as unknown as Plain);
}

/**
 * Decodes and validates a standalone message encoded with {@link encodeMessage}.
 * @throws {WireError}
 */
export function decodeMessage<N extends WireMessageName>(name: N, bytes: Uint8Array): WireMessages[N] {
  const type = typeOf(name);
  return validateAs(type, decodeWith(type, bytes)) as unknown as WireMessages[N];
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
 * Encodes an envelope.
 * @throws {WireError} (reason `invalid`) when a field rule is broken: a bug in the sender.
 */
export function encodeEnvelope(input: EnvelopeInput): Uint8Array {
  const value: Plain = { ...input, epoch: input.epoch ?? 0, callId: input.callId ?? "", schemaVersion: input.schemaVersion ?? SCHEMA_VERSION };
  return encodeWith(EnvelopeType, value);
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

function acceptedKinds(subject: string, expect: readonly PayloadKind[] | undefined): readonly PayloadKind[] {
  if (expect !== undefined) return expect;
  const parsed = parseSubject(subject);
  if (parsed) return parsed.spec.payloads;
  if (subject.startsWith("_INBOX.")) return REPLY_PAYLOADS;
  return PAYLOAD_KINDS;
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
    const plain = decodeWith(EnvelopeType, bytes);
    const version = plain.schemaVersion as number;
    if (version < MIN_SCHEMA_VERSION || version > SCHEMA_VERSION) {
      const supported = MIN_SCHEMA_VERSION === SCHEMA_VERSION ? `${SCHEMA_VERSION}` : `${MIN_SCHEMA_VERSION}..${SCHEMA_VERSION}`;
      throw new WireError("schema_version", [`schemaVersion: ${version} is not supported (supported: ${supported})`]);
    }
    const kind = plain.payload as PayloadKind | undefined;
    if (kind === undefined) throw new WireError("missing_payload", ["payload: must be set"]);
    const accepted = acceptedKinds(subject, options?.expect);
    if (!accepted.includes(kind)) {
      throw new WireError("wrong_payload", [`payload: ${kind} is not accepted on ${subject} (expected ${accepted.join(" | ")})`]);
    }
    validateAs(EnvelopeType, plain);
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
  options?: DecodeOptions<K>,
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
