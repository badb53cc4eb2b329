import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  DropCounter,
  SCHEMA_VERSION,
  WireError,
  decodeEnvelope,
  decodeMessage,
  encodeEnvelope,
  encodeMessage,
  handleSafely,
  safeDecode,
  validateMessage,
  wireLength,
  wireRoot,
  type EnvelopeInput,
  type EnvelopeOf,
} from "../../sdk/wire/codec.ts";
import { PAYLOAD_KINDS, type TaskState, TASK_STATES, TASK_STATUS_REASONS, type TaskStatus } from "../../sdk/wire/types.ts";
import {
  agentCmdSubject,
  frameworkEventsSubject,
  masterAgentSubject,
  masterLeaderSubject,
  masterSchedulerSubject,
} from "../../sdk/wire/subjects.ts";
import { damaged, withValueAt } from "../harness/damage.ts";
import { MemoryLogger, agentInfo, everyPayload, frameworkInfo, offer, taskInfo, taskStatus } from "./fixtures.ts";

const CLUSTER = "test";

/** The subject each payload kind normally travels on (replies use an inbox). */
function subjectOf(input: EnvelopeInput): string {
  switch (input.payload) {
    case "schedulerCall":
      return masterSchedulerSubject(CLUSTER);
    case "schedulerEvent":
      return frameworkEventsSubject(CLUSTER, "fw-1");
    case "callResponse":
      return "_INBOX.abc.1";
    case "agentToMaster":
      return masterAgentSubject(CLUSTER, input.senderId);
    case "masterToAgent":
      return agentCmdSubject(CLUSTER, "agent-1");
    case "masterInfo":
      return masterLeaderSubject(CLUSTER);
  }
}

/** What decoding should give back for an input: the header defaults filled in. */
function expected(input: EnvelopeInput): object {
  return { epoch: 0, callId: "", ...input, schemaVersion: SCHEMA_VERSION };
}

const EnvelopeType = wireRoot.lookupType("corral.v1.Envelope");

/** Encodes with protobufjs directly, bypassing the codec's checks, to forge bad messages. */
function forge(value: Record<string, unknown>): Uint8Array {
  return EnvelopeType.encode(EnvelopeType.fromObject(value)).finish();
}

describe("codec round trips", () => {
  for (const [name, input] of Object.entries(everyPayload)) {
    it(`round-trips ${name}`, () => {
      const bytes = encodeEnvelope(input);
      const result = safeDecode(subjectOf(input), bytes);
      expect(result.ok, result.ok ? "" : result.error.message).toBe(true);
      if (result.ok) expect(result.envelope).toEqual(expected(input));
    });
  }

  it("covers every member of every oneof in the schema", () => {
    const covered = new Set(Object.keys(everyPayload).map((k) => k.split(".")));
    const members = (typeName: string) =>
      wireRoot.lookupType(`corral.v1.${typeName}`).oneofs!["kind"]!.fieldsArray.map((f) => f.name);
    for (const kind of ["schedulerCall", "schedulerEvent", "agentToMaster", "masterToAgent"]) {
      const typeName = kind[0]!.toUpperCase() + kind.slice(1);
      const seen = [...covered].filter((p) => p[0] === kind).map((p) => p[1]);
      expect(seen.sort()).toEqual(members(typeName).sort());
    }
    const payloads = new Set([...covered].map((p) => p[0]));
    expect([...payloads].sort()).toEqual([...PAYLOAD_KINDS].sort());
  });

  it("keeps present-but-zero optional fields apart from absent ones", () => {
    const absent = { ...taskStatus };
    delete absent.exitCode;
    delete absent.healthy;
    const decodedAbsent = decodeMessage("TaskStatus", encodeMessage("TaskStatus", absent));
    expect("exitCode" in decodedAbsent).toBe(false);
    expect("healthy" in decodedAbsent).toBe(false);
    const decodedZero = decodeMessage("TaskStatus", encodeMessage("TaskStatus", { ...taskStatus, exitCode: 0, healthy: false }));
    expect(decodedZero.exitCode).toBe(0);
    expect(decodedZero.healthy).toBe(false);
  });

  it("returns bytes as private Uint8Array copies", () => {
    const bytes = encodeMessage("TaskStatus", taskStatus);
    const decoded = decodeMessage("TaskStatus", bytes);
    expect(decoded.uuid).toBeInstanceOf(Uint8Array);
    expect(Buffer.isBuffer(decoded.uuid)).toBe(false);
    bytes.fill(0);
    expect(decoded.uuid).toEqual(taskStatus.uuid);
  });

  it("gives every encode its own bytes, also around a message of several MiB", () => {
    const message = (data: Uint8Array): EnvelopeInput => ({ senderId: "master-1", epoch: 3, payload: "schedulerEvent", schedulerEvent: { kind: "message", message: { agentId: "agent-1", data } } });
    const small = message(new Uint8Array([1, 2, 3]));
    const huge = message(new Uint8Array(3 << 20).fill(7));
    const subject = frameworkEventsSubject(CLUSTER, "fw-1");
    const first = encodeEnvelope(small);
    const big = encodeEnvelope(huge);
    const after = encodeEnvelope(everyPayload["schedulerEvent.update"]!);
    // Later encodes did not write over earlier results.
    expect(decodeEnvelope(subject, first)).toEqual(expected(small));
    // The big payload's bytes are compared as bytes: toEqual walks a typed array element by
    // element, which took seconds for 3 MiB.
    type MessageEvent = { schedulerEvent: { message: { agentId: string; data: Uint8Array } } };
    const split = (e: object) => {
      const { data, ...rest } = (e as MessageEvent).schedulerEvent.message;
      return { data: Buffer.from(data), envelope: { ...e, schedulerEvent: { ...(e as MessageEvent).schedulerEvent, message: rest } } };
    };
    const got = split(decodeEnvelope(subject, big));
    const want = split(expected(huge));
    expect(got.data.equals(want.data)).toBe(true);
    expect(got.envelope).toEqual(want.envelope);
    expect(decodeEnvelope(subject, after)).toEqual(expected(everyPayload["schedulerEvent.update"]!));
    expect(encodeEnvelope(small)).toEqual(first);
  });

  it("round-trips standalone messages used for storage", () => {
    expect(decodeMessage("FrameworkInfo", encodeMessage("FrameworkInfo", frameworkInfo))).toEqual(frameworkInfo);
    expect(decodeMessage("AgentInfo", encodeMessage("AgentInfo", agentInfo))).toEqual(agentInfo);
    expect(decodeMessage("TaskInfo", encodeMessage("TaskInfo", taskInfo))).toEqual(taskInfo);
    expect(decodeMessage("Offer", encodeMessage("Offer", offer))).toEqual(offer);
  });

  it("carries a task's allocation role when set, and leaves it absent when not (as older senders and checkpoints do)", () => {
    const withRole = { ...taskInfo, allocationRole: "eng/web" };
    expect(decodeMessage("TaskInfo", encodeMessage("TaskInfo", withRole))).toEqual(withRole);
    const decoded = decodeMessage("TaskInfo", encodeMessage("TaskInfo", taskInfo));
    expect("allocationRole" in decoded).toBe(false);
    // Set, even empty, is not absent: the master refuses "" as a role rather than guessing one.
    expect(decodeMessage("TaskInfo", encodeMessage("TaskInfo", { ...taskInfo, allocationRole: "" })).allocationRole).toBe("");
  });

  it("carries a status update's latest state when set, leaves it absent when not (as from older agents), and refuses an UNSPECIFIED one", () => {
    const input = everyPayload["agentToMaster.statusUpdate"] as EnvelopeOf<"agentToMaster">;
    if (input.agentToMaster.kind !== "statusUpdate") throw new Error("fixture");
    const withLatest = { ...input, agentToMaster: { ...input.agentToMaster, statusUpdate: { ...input.agentToMaster.statusUpdate, latestState: "TASK_FINISHED" as TaskState } } };
    expect(decodeEnvelope(subjectOf(withLatest), encodeEnvelope(withLatest))).toEqual(expected(withLatest));
    const decoded = decodeEnvelope<"agentToMaster">(subjectOf(input), encodeEnvelope(input)).agentToMaster;
    expect(decoded.kind === "statusUpdate" && "latestState" in decoded.statusUpdate).toBe(false);
    const unspecified = { ...input, agentToMaster: { ...input.agentToMaster, statusUpdate: { ...input.agentToMaster.statusUpdate, latestState: "TASK_STATE_UNSPECIFIED" as TaskState } } };
    expect(() => encodeEnvelope(unspecified)).toThrow("agentToMaster.statusUpdate.latestState: must not be TASK_STATE_UNSPECIFIED when set");
    const forged = forge({ senderId: "agent-1", schemaVersion: SCHEMA_VERSION, agentToMaster: { statusUpdate: { frameworkId: "fw-1", status: { taskId: "t", state: "TASK_RUNNING", source: "SOURCE_AGENT" }, latestState: "TASK_STATE_UNSPECIFIED" } } });
    const result = safeDecode(masterAgentSubject(CLUSTER, "agent-1"), forged);
    expect(result.ok ? "accepted" : result.error.problems).toEqual(["agentToMaster.statusUpdate.latestState: must not be TASK_STATE_UNSPECIFIED when set"]);
  });

  it("round-trips every safe 64-bit integer exactly, both halves of the wire's Long (property; unsafe ones are refused below)", () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), fc.maxSafeNat(), (epoch, seq) => {
        const env: EnvelopeInput = { senderId: "master-1", epoch, payload: "masterToAgent", masterToAgent: { kind: "ping", ping: { seq } } };
        const decoded = decodeEnvelope(agentCmdSubject(CLUSTER, "a1"), encodeEnvelope(env));
        expect(decoded.epoch).toBe(epoch);
        const ping = decoded.payload === "masterToAgent" && decoded.masterToAgent.kind === "ping" ? decoded.masterToAgent.ping : undefined;
        expect(ping?.seq).toBe(seq);
      }),
    );
  });

  it("round-trips arbitrary task statuses (property)", () => {
    const status = fc.record({
      taskId: fc.string({ minLength: 1 }),
      state: fc.constantFrom(...TASK_STATES),
      message: fc.string(),
      source: fc.constantFrom("SOURCE_MASTER" as const, "SOURCE_AGENT" as const, "SOURCE_EXECUTOR" as const),
      reason: fc.constantFrom(...TASK_STATUS_REASONS),
      agentId: fc.string(),
      frameworkId: fc.string(),
      uuid: fc.uint8Array({ maxLength: 16 }),
      timestamp: fc.double({ noNaN: true, noDefaultInfinity: true }),
      exitCode: fc.option(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { nil: undefined }),
      healthy: fc.option(fc.boolean(), { nil: undefined }),
    });
    fc.assert(
      fc.property(status, (s) => {
        const input: TaskStatus = { ...s };
        if (input.exitCode === undefined) delete input.exitCode;
        if (input.healthy === undefined) delete input.healthy;
        const env: EnvelopeInput = {
          senderId: "agent-1",
          payload: "agentToMaster",
          agentToMaster: { kind: "statusUpdate", statusUpdate: { frameworkId: "fw-1", status: input } },
        };
        const decoded = decodeEnvelope(masterAgentSubject(CLUSTER, "agent-1"), encodeEnvelope(env));
        expect(decoded).toEqual(expected(env));
      }),
    );
  });
});

describe("encoding refuses what decoding would drop", () => {
  it("names the missing field and the rule", () => {
    const bad: EnvelopeInput = {
      senderId: "fw-1",
      payload: "schedulerCall",
      schedulerCall: { frameworkId: "fw-1", kind: "accept", accept: { offerIds: [], operations: [] } },
    };
    expect(() => encodeEnvelope(bad)).toThrow(WireError);
    expect(() => encodeEnvelope(bad)).toThrow("schedulerCall.accept.offerIds: must not be empty");
  });

  it("rejects an UNSPECIFIED task state, an empty sender and a reversed range", () => {
    const status = { ...taskStatus, state: "TASK_STATE_UNSPECIFIED" as TaskState };
    expect(validateMessage("TaskStatus", status)).toContain("state: must not be empty");
    const noSender = { ...everyPayload["masterInfo"]!, senderId: "" };
    expect(() => encodeEnvelope(noSender)).toThrow("senderId: must not be empty");
    const reversed = { name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 9, end: 3 }] } };
    expect(validateMessage("Resource", reversed)).toEqual(["ranges.range[0].begin: must be <= end (9 > 3)"]);
  });

  it("rejects a discriminant that disagrees with the member set, and two members", () => {
    const liar = { name: "cpus", role: "*", value: "ranges", scalar: 1 };
    expect(validateMessage("Resource", liar)).toEqual(['value: says "ranges" but scalar is set']);
    const both = { name: "cpus", role: "*", value: "scalar", scalar: 1, set: { item: [] } };
    expect(validateMessage("Resource", both)[0]).toMatch(/several members set/);
  });

  it("rejects calls without a framework id except the first subscribe", () => {
    const kill: EnvelopeInput = {
      senderId: "fw-1",
      payload: "schedulerCall",
      schedulerCall: { frameworkId: "", kind: "kill", kill: { taskId: "t", agentId: "" } },
    };
    expect(() => encodeEnvelope(kill)).toThrow("schedulerCall.frameworkId: must not be empty for kill");
  });

  it("rejects values JavaScript callers can get wrong at runtime", () => {
    const problems = validateMessage("TaskStatus", {
      ...taskStatus,
      state: "TASK_RUNNNING",
      timestamp: Number.NaN,
      uuid: "not bytes",
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        'state: unknown TaskState value "TASK_RUNNNING"',
        "uuid: must be a Uint8Array",
        "timestamp: must be a finite number",
      ]),
    );
    expect(validateMessage("MasterInfo", { id: "m", epoch: -1 })).toEqual(["epoch: must not be negative"]);
    expect(validateMessage("MasterInfo", { id: "m", epoch: 2 ** 60 })).toEqual(["epoch: must be a (safe) integer"]);
    // 32-bit fields: protobufjs would silently keep only the low 32 bits.
    expect(validateMessage("TaskStatus", { ...taskStatus, exitCode: 2 ** 31 })).toEqual(["exitCode: must be within -2147483648..2147483647 (int32)"]);
    expect(validateMessage("TaskStatus", { ...taskStatus, exitCode: -(2 ** 31) })).toEqual([]);
    expect(() => encodeEnvelope({ ...everyPayload["masterInfo"]!, schemaVersion: 2 ** 32 })).toThrow("schemaVersion: must be at most 4294967295 (uint32)");
  });

  it("refuses an enum given as the string of its number: protobufjs would send it as absent", () => {
    // protobufjs's name table falls back to its number table, so "3" looked like a known name,
    // yet fromObject drops it: the receiver then refused a status without a state.
    expect(validateMessage("TaskStatus", { ...taskStatus, state: "3" })).toEqual(['state: unknown TaskState value "3"']);
    expect(validateMessage("TaskStatus", { ...taskStatus, state: "0" })).toEqual(['state: unknown TaskState value "0"']);
    expect(validateMessage("TaskStatus", { ...taskStatus, state: "TASK_RUNNING" })).toEqual([]);
  });

  it("names the field for each wrong shape: scalar, nested message, list, map, oneof", () => {
    const command = { value: 7, arguments: "a b", shell: "yes", environment: ["X=1"] };
    expect(validateMessage("TaskInfo", { ...taskInfo, command })).toEqual([
      "command.value: must be a string",
      "command.arguments: must be an array",
      "command.shell: must be a boolean",
      "command.environment: must be an object",
    ]);
    expect(validateMessage("TaskInfo", { ...taskInfo, command: "echo hi" })).toEqual(["command: must be a CommandInfo object"]);
    expect(validateMessage("TaskInfo", { ...taskInfo, command: { value: "x", environment: { X: 1 } } })).toEqual(["command.environment[X]: must be a string"]);
    expect(validateMessage("TaskInfo", { ...taskInfo, resources: [{ name: "cpus", role: "*" }] })).toEqual(["resources[0].value: must be set"]);
    // The discriminator may be left out when exactly one member is set.
    expect(validateMessage("Resource", { name: "cpus", role: "*", scalar: 1 })).toEqual([]);
    expect(validateMessage("Resource", { name: "cpus", role: "*", value: "name", scalar: 1 })).toEqual(['value: says "name" but scalar is set']);
  });

  it("rejects a CallResponse that fails without an error code", () => {
    const resp: EnvelopeInput = {
      senderId: "master-1",
      payload: "callResponse",
      callResponse: { ok: false, errorCode: "", message: "nope" },
    };
    expect(() => encodeEnvelope(resp)).toThrow("callResponse.errorCode: must not be empty when ok is false");
  });
});

/** Envelopes of {@link everyPayload}, each with one value somewhere in its payload damaged. */
function damagedEnvelopes(): fc.Arbitrary<EnvelopeInput> {
  const inputs = Object.values(everyPayload);
  const payloadOf = (input: EnvelopeInput) => input[input.payload as keyof EnvelopeInput];
  return damaged(inputs.map(payloadOf)).map(({ index, path, value }) => {
    const input = inputs[index]!;
    return { ...input, [input.payload]: withValueAt(payloadOf(input), path, value) } as EnvelopeInput;
  });
}

describe("a message the codec sends is one it accepts", () => {
  it("either refuses a damaged payload naming the problem, or sends bytes it decodes back to the same message (property)", () => {
    fc.assert(
      fc.property(damagedEnvelopes(), (damagedInput) => {
        let bytes: Uint8Array;
        try {
          bytes = encodeEnvelope(damagedInput);
        } catch (err) {
          expect(err).toBeInstanceOf(WireError);
          expect((err as WireError).reason).toBe("invalid");
          expect((err as WireError).problems.length).toBeGreaterThan(0);
          return;
        }
        const result = safeDecode(subjectOf(damagedInput), bytes, { expect: [...PAYLOAD_KINDS] });
        expect(result.ok, result.ok ? "" : result.error.message).toBe(true);
        // What came back encodes to the very same bytes: nothing was lost or changed on the way.
        if (result.ok) expect(encodeEnvelope(result.envelope as EnvelopeInput)).toEqual(bytes);
      }),
      { numRuns: 2000 },
    );
  });
});

describe("in-process envelopes (the simulator's wire)", () => {
  it("decode to what the bytes decode to, for every payload, and cost a real bus its size only on demand", () => {
    for (const [name, input] of Object.entries(everyPayload)) {
      const bytes = encodeEnvelope(input);
      const carried = encodeEnvelope(input, { inProcess: true });
      expect(decodeEnvelope(subjectOf(input), carried), name).toEqual(decodeEnvelope(subjectOf(input), bytes));
      expect(wireLength(carried), name).toBe(bytes.length);
      expect(wireLength(bytes), name).toBe(bytes.length);
    }
  });

  it("give each receiver its own copy, bytes fields included", () => {
    const input = everyPayload["agentToMaster.statusUpdate"]!;
    const carried = encodeEnvelope(input, { inProcess: true });
    const first = decodeEnvelope(masterAgentSubject(CLUSTER, "agent-1"), carried) as EnvelopeOf<"agentToMaster">;
    const second = decodeEnvelope(masterAgentSubject(CLUSTER, "agent-1"), carried) as EnvelopeOf<"agentToMaster">;
    expect(second).toEqual(first);
    expect(second.agentToMaster).not.toBe(first.agentToMaster);
    const status = (e: EnvelopeOf<"agentToMaster">) => (e.agentToMaster as { statusUpdate: { status: TaskStatus } }).statusUpdate.status;
    status(first).uuid.fill(0);
    status(first).message = "changed by the first receiver";
    expect(status(second).uuid).toEqual(taskStatus.uuid);
    expect(status(second).message).toBe(taskStatus.message);
  });

  it("keep every rule: a bad message is refused on encode, a misplaced one dropped on decode", () => {
    const bad = { ...everyPayload["schedulerCall.accept"]!, senderId: 7 } as unknown as EnvelopeInput;
    expect(() => encodeEnvelope(bad, { inProcess: true })).toThrow(WireError);
    const carried = encodeEnvelope(everyPayload["schedulerCall.accept"]!, { inProcess: true });
    const result = safeDecode(agentCmdSubject(CLUSTER, "agent-1"), carried);
    expect(result.ok || result.error.reason).toBe("wrong_payload");
  });

  it("are no message outside the process: copied bytes, a slice or another message type is a decode error", () => {
    const carried = encodeEnvelope(everyPayload["schedulerCall.accept"]!, { inProcess: true });
    const subject = masterSchedulerSubject(CLUSTER);
    for (const outside of [new Uint8Array(carried), carried.slice(), Buffer.from(carried)]) {
      expect(outside.constructor.name).not.toBe(carried.constructor.name);
      const result = safeDecode(subject, outside);
      expect(result.ok || result.error.reason).toBe("decode_error");
    }
    expect(() => decodeMessage("TaskInfo", carried)).toThrow(/not a valid TaskInfo: an in-process Envelope/);
  });

  it("accept and refuse exactly what bytes do, and decode to the same message (property)", () => {
    fc.assert(
      fc.property(damagedEnvelopes(), (damagedInput) => {
        const attempt = (inProcess: boolean) => {
          try {
            return { bytes: encodeEnvelope(damagedInput, { inProcess }) };
          } catch (err) {
            return { problems: (err as WireError).problems };
          }
        };
        const asBytes = attempt(false);
        const carried = attempt(true);
        expect(carried.problems).toEqual(asBytes.problems);
        if (asBytes.bytes === undefined || carried.bytes === undefined) return;
        const options = { expect: [...PAYLOAD_KINDS] };
        expect(safeDecode(subjectOf(damagedInput), carried.bytes, options)).toEqual(safeDecode(subjectOf(damagedInput), asBytes.bytes, options));
      }),
      { numRuns: 2000 },
    );
  });
});

describe("safeDecode never throws", () => {
  const valid = encodeEnvelope(everyPayload["schedulerCall.accept"]!);
  const subject = masterSchedulerSubject(CLUSTER);

  it("turns random bytes into ok:false or a valid envelope (property)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.constantFrom(subject, "_INBOX.x", "weird"), (bytes, subj) => {
        const result = safeDecode(subj, bytes);
        if (result.ok) expect(result.envelope.schemaVersion).toBe(SCHEMA_VERSION);
        else expect(result.error).toBeInstanceOf(WireError);
      }),
      { numRuns: 2_000 },
    );
  });

  it("survives every truncation of a valid message", () => {
    for (let len = 0; len < valid.length; len++) {
      const result = safeDecode(subject, valid.subarray(0, len));
      if (!result.ok) expect(result.error).toBeInstanceOf(WireError);
    }
    // The empty message decodes to an envelope with nothing set: version 0.
    const empty = safeDecode(subject, new Uint8Array());
    expect(empty.ok).toBe(false);
    if (!empty.ok) expect(empty.error.reason).toBe("schema_version");
  });

  it("survives random corruption of a valid message, and what it accepts it can send on (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), (edits) => {
        const bytes = new Uint8Array(valid);
        for (const [pos, byte] of edits) bytes[pos % bytes.length] = byte;
        const result = safeDecode(subject, bytes);
        expect(typeof result.ok).toBe("boolean");
        // A relay (the master passing a status on) re-encodes what it received: that must work.
        if (result.ok) expect(decodeEnvelope(subject, encodeEnvelope(result.envelope as EnvelopeInput))).toEqual(result.envelope);
      }),
      { numRuns: 2_000 },
    );
  });

  it("rejects things that are not byte arrays", () => {
    for (const junk of [undefined, null, "text", 42, {}, [1, 2, 3]]) {
      const result = safeDecode(subject, junk as unknown as Uint8Array);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.error.reason).toBe("decode_error");
    }
  });

  it("drops a wrong schema version", () => {
    for (const version of [0, SCHEMA_VERSION + 1, 2 ** 32 - 1]) {
      const result = safeDecode(subject, encodeEnvelope({ ...everyPayload["schedulerCall.accept"]!, schemaVersion: version }));
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.error.reason).toBe("schema_version");
    }
  });

  it("drops an envelope without payload", () => {
    const result = safeDecode(subject, forge({ senderId: "x", schemaVersion: SCHEMA_VERSION }));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error.reason).toBe("missing_payload");
  });

  it("keeps the last of several members of one oneof on the wire, as protobuf specifies", () => {
    const ResourceType = wireRoot.lookupType("corral.v1.Resource");
    const both = ResourceType.encode(ResourceType.fromObject({ name: "cpus", role: "*", scalar: 1, set: { item: ["a"] } })).finish();
    expect(decodeMessage("Resource", both)).toEqual({ name: "cpus", role: "*", value: "set", set: { item: ["a"] } });
  });

  it("drops a message whose sender is not the agent its subject is for, naming both", () => {
    const pong = encodeEnvelope({ ...everyPayload["agentToMaster.pong"]!, senderId: "agent-1", callId: "c-1" });
    expect(safeDecode(masterAgentSubject(CLUSTER, "agent-1"), pong).ok).toBe(true);
    const elsewhere = masterAgentSubject(CLUSTER, "agent-2");
    const result = safeDecode(elsewhere, pong);
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.error.reason).toBe("wrong_sender");
      expect(result.error.problems).toEqual([`senderId: 'agent-1' may not publish on ${elsewhere}, which is for 'agent-2' only`]);
      expect(result.error.callId).toBe("c-1"); // a request among them can be answered
    }
    // Other subjects carry no sender rule: a framework's events come from the master.
    expect(safeDecode(frameworkEventsSubject(CLUSTER, "fw-1"), encodeEnvelope(everyPayload["schedulerEvent.heartbeat"]!)).ok).toBe(true);
  });

  it("drops a payload that does not belong on the subject", () => {
    const event = encodeEnvelope(everyPayload["schedulerEvent.heartbeat"]!);
    const onScheduler = safeDecode(subject, event);
    expect(onScheduler.ok).toBe(false);
    if (!onScheduler.ok) expect(onScheduler.error.reason).toBe("wrong_payload");
    const agentCall = encodeEnvelope(everyPayload["agentToMaster.pong"]!);
    const r = safeDecode(agentCmdSubject(CLUSTER, "agent-1"), agentCall);
    expect(r.ok).toBe(false);
    // Replies on an inbox may be events (SUBSCRIBE's answer) but never agent messages.
    expect(safeDecode("_INBOX.q.1", event).ok).toBe(true);
    expect(safeDecode("_INBOX.q.1", agentCall).ok).toBe(false);
    // An explicit expectation overrides the table.
    expect(safeDecode(subject, event, { expect: ["schedulerEvent"] }).ok).toBe(true);
  });

  it("drops unknown enum values, unsafe integers and non-finite numbers", () => {
    const status = { ...taskStatus, uuid: Buffer.from(taskStatus.uuid) };
    const withState = (state: number) =>
      forge({
        senderId: "m",
        schemaVersion: SCHEMA_VERSION,
        schedulerEvent: { update: { status: { ...status, state } } },
      });
    const unknownEnum = safeDecode(frameworkEventsSubject(CLUSTER, "f"), withState(99));
    expect(unknownEnum.ok).toBe(false);
    if (!unknownEnum.ok) {
      expect(unknownEnum.error.reason).toBe("invalid");
      expect(unknownEnum.error.problems).toEqual(["schedulerEvent.update.status.state: unknown TaskState value 99"]);
    }
    const unspecified = safeDecode(frameworkEventsSubject(CLUSTER, "f"), withState(0));
    expect(unspecified.ok).toBe(false);
    if (!unspecified.ok) expect(unspecified.error.problems).toEqual(["schedulerEvent.update.status.state: must not be empty"]);

    const hugeEpoch = forge({
      senderId: "m",
      epoch: "1152921504606846976", // protobufjs parses decimal strings for 64-bit fields
      schemaVersion: SCHEMA_VERSION,
      masterInfo: { id: "m" },
    });
    const huge = safeDecode(masterLeaderSubject(CLUSTER), hugeEpoch);
    expect(huge.ok).toBe(false);
    if (!huge.ok) expect(huge.error.problems[0]).toMatch(/^epoch: integer 1152921504606846976 is not exactly representable/);

    const nan = forge({
      senderId: "m",
      schemaVersion: SCHEMA_VERSION,
      schedulerCall: { frameworkId: "f", decline: { offerIds: ["o"], filters: { refuseSeconds: Number.NaN } } },
    });
    const nanResult = safeDecode(subject, nan);
    expect(nanResult.ok).toBe(false);
    if (!nanResult.ok) expect(nanResult.error.problems).toEqual(["schedulerCall.decline.filters.refuseSeconds: must be a finite number, got NaN"]);

    // Two members of one oneof on the wire: protobuf's rule is that the last one wins.
    const twoPayloads = forge({
      senderId: "m",
      schemaVersion: SCHEMA_VERSION,
      masterInfo: { id: "m" },
      callResponse: { ok: true },
    });
    const two = safeDecode("elsewhere", twoPayloads);
    expect(two.ok && two.envelope.payload).toBe("masterInfo");
  });

  it("decodeEnvelope throws the same WireError", () => {
    expect(() => decodeEnvelope(subject, new Uint8Array([0xff, 0xff]))).toThrow(WireError);
  });
});

describe("DropCounter", () => {
  it("counts by subject kind and reason and renders Prometheus text", () => {
    const counter = new DropCounter();
    counter.record(agentCmdSubject(CLUSTER, "a1"), "decode_error");
    counter.record(agentCmdSubject(CLUSTER, "a2"), "decode_error");
    expect(counter.record(masterSchedulerSubject(CLUSTER), "wrong_payload")).toBe(1);
    counter.record("_INBOX.x.y", "invalid");
    counter.record("somewhere.else", "invalid");
    expect(counter.count({ kind: "agent.cmd", reason: "decode_error" })).toBe(2);
    expect(counter.count({ reason: "invalid" })).toBe(2);
    expect(counter.count()).toBe(5);
    expect(counter.snapshot()).toEqual([
      { kind: "agent.cmd", reason: "decode_error", count: 2 },
      { kind: "master.scheduler", reason: "wrong_payload", count: 1 },
      { kind: "reply", reason: "invalid", count: 1 },
      { kind: "unknown", reason: "invalid", count: 1 },
    ]);
    expect(counter.toPrometheus()).toBe(
      [
        "# HELP corral_bus_dropped_messages_total Bus messages dropped because they could not be decoded, validated or handled.",
        "# TYPE corral_bus_dropped_messages_total counter",
        'corral_bus_dropped_messages_total{kind="agent.cmd",reason="decode_error"} 2',
        'corral_bus_dropped_messages_total{kind="master.scheduler",reason="wrong_payload"} 1',
        'corral_bus_dropped_messages_total{kind="reply",reason="invalid"} 1',
        'corral_bus_dropped_messages_total{kind="unknown",reason="invalid"} 1',
        "",
      ].join("\n"),
    );
  });

  it("stays bounded whatever the subjects are", () => {
    const counter = new DropCounter();
    for (let i = 0; i < 500; i++) counter.record(agentCmdSubject(CLUSTER, `agent-${i}`), "invalid");
    expect(counter.snapshot()).toHaveLength(1);
  });
});

describe("handleSafely", () => {
  const subject = agentCmdSubject(CLUSTER, "agent-1");
  const ping = encodeEnvelope(everyPayload["masterToAgent.ping"]!);

  it("hands valid envelopes to the handler, typed by the expected kinds", () => {
    const seen: number[] = [];
    const handler = handleSafely(
      new MemoryLogger(),
      new DropCounter(),
      (env) => {
        if (env.masterToAgent.kind === "ping") seen.push(env.masterToAgent.ping.seq);
      },
      { expect: ["masterToAgent"] },
    );
    handler({ subject, data: ping });
    expect(seen).toEqual([0]);
  });

  it("counts and logs bad messages without calling the handler; logging is sampled", () => {
    const log = new MemoryLogger();
    const counter = new DropCounter();
    let calls = 0;
    const handler = handleSafely(log, counter, () => {
      calls++;
    });
    for (let i = 0; i < 10; i++) handler({ subject, data: new Uint8Array([0xff, i]) });
    handler({ subject, data: encodeEnvelope(everyPayload["schedulerEvent.heartbeat"]!) });
    expect(calls).toBe(0);
    expect(counter.count({ kind: "agent.cmd", reason: "decode_error" })).toBe(10);
    expect(counter.count({ kind: "agent.cmd", reason: "wrong_payload" })).toBe(1);
    // Drops 1, 2, 4 and 8 of the decode errors are logged, plus the first wrong payload.
    expect(log.at("warn")).toHaveLength(5);
    expect(log.at("warn")[0]!.obj).toMatchObject({ subject, reason: "decode_error", dropped: 1 });
  });

  it("catches a throwing and a rejecting handler and counts them", async () => {
    const log = new MemoryLogger();
    const counter = new DropCounter();
    const throwing = handleSafely(log, counter, () => {
      throw new Error("boom");
    });
    expect(() => throwing({ subject, data: ping })).not.toThrow();
    let rejected!: () => void;
    const done = new Promise<void>((resolve) => (rejected = resolve));
    const rejecting = handleSafely(log, counter, async () => {
      rejected();
      throw new Error("async boom");
    });
    rejecting({ subject, data: ping });
    await done;
    // The rejection is observed one microtask tick after the handler's promise settles.
    await Promise.resolve();
    await Promise.resolve();
    expect(counter.count({ reason: "handler_error" })).toBe(2);
    expect(log.at("error").map((e) => (e.obj as { err: Error }).err.message)).toEqual(["boom", "async boom"]);
  });
});
