/** Sample wire objects shared by the sdk tests: complete, valid, and with every field exercised. */

import type { Logger } from "../../sdk/transport.ts";
import type { EnvelopeInput } from "../../sdk/wire/codec.ts";
import type { AgentInfo, CommandInfo, FrameworkInfo, Offer, TaskInfo, TaskStatus } from "../../sdk/wire/types.ts";

export const command: CommandInfo = {
  value: "sleep 30",
  arguments: [],
  shell: true,
  environment: { PORT0: "31000", LANG: "C" },
  user: "nobody",
};

export const taskInfo: TaskInfo = {
  taskId: "web.1",
  name: "web",
  agentId: "agent-1",
  resources: [
    { name: "cpus", role: "*", value: "scalar", scalar: 0.5 },
    { name: "mem", role: "web", value: "scalar", scalar: 128 },
    { name: "ports", role: "*", value: "ranges", ranges: { range: [{ begin: 31000, end: 31001 }] } },
    { name: "gpus", role: "*", value: "set", set: { item: ["gpu0", "gpu1"] } },
    // Zero is a legal oneof value and must survive the trip (proto3 would drop a plain zero).
    { name: "disk", role: "*", value: "scalar", scalar: 0 },
  ],
  command,
  killGracePeriodSeconds: 0,
  labels: { team: "infra" },
};

export const taskStatus: TaskStatus = {
  taskId: "web.1",
  state: "TASK_FAILED",
  message: "exited with status 3",
  source: "SOURCE_AGENT",
  reason: "REASON_COMMAND_EXECUTOR_FAILED",
  agentId: "agent-1",
  frameworkId: "fw-1",
  uuid: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
  timestamp: 1_700_000_000.25,
  exitCode: 0,
  healthy: false,
};

export const frameworkInfo: FrameworkInfo = {
  id: "fw-1",
  name: "marathon",
  roles: ["web", "*"],
  principal: "marathon",
  failoverTimeoutSeconds: 604_800,
  checkpoint: true,
  partitionAware: true,
  hostname: "m1.example",
};

export const agentInfo: AgentInfo = {
  id: "agent-1",
  hostname: "a1.example",
  resources: [{ name: "cpus", role: "*", value: "scalar", scalar: 8 }],
  attributes: [
    { name: "rack", text: "r1" },
    { name: "zone", text: "eu-1a" },
  ],
  httpEndpoint: "http://10.0.0.5:5051",
};

export const offer: Offer = {
  id: "offer-7",
  frameworkId: "fw-1",
  agentId: "agent-1",
  hostname: "a1.example",
  role: "web",
  resources: taskInfo.resources,
  attributes: agentInfo.attributes,
};

const uuid = taskStatus.uuid;

/** One envelope for every member of every oneof in the contract. */
export const everyPayload: Record<string, EnvelopeInput> = {
  "schedulerCall.subscribe": {
    senderId: "fw-1",
    payload: "schedulerCall",
    schedulerCall: { frameworkId: "", kind: "subscribe", subscribe: { frameworkInfo: { ...frameworkInfo, id: "" } } },
  },
  "schedulerCall.teardown": {
    senderId: "fw-1",
    payload: "schedulerCall",
    schedulerCall: { frameworkId: "fw-1", kind: "teardown", teardown: {} },
  },
  "schedulerCall.accept": {
    senderId: "fw-1",
    callId: "call-1",
    payload: "schedulerCall",
    schedulerCall: {
      frameworkId: "fw-1",
      kind: "accept",
      accept: {
        offerIds: ["offer-7"],
        operations: [{ kind: "launch", launch: { taskInfos: [taskInfo] } }],
        filters: { refuseSeconds: 0 },
      },
    },
  },
  "schedulerCall.decline": {
    senderId: "fw-1",
    payload: "schedulerCall",
    schedulerCall: { frameworkId: "fw-1", kind: "decline", decline: { offerIds: ["o1", "o2"], filters: {} } },
  },
  "schedulerCall.revive": {
    senderId: "fw-1",
    payload: "schedulerCall",
    schedulerCall: { frameworkId: "fw-1", kind: "revive", revive: { roles: ["web"] } },
  },
  "schedulerCall.suppress": {
    senderId: "fw-1",
    payload: "schedulerCall",
    schedulerCall: { frameworkId: "fw-1", kind: "suppress", suppress: { roles: [] } },
  },
  "schedulerCall.kill": {
    senderId: "fw-1",
    payload: "schedulerCall",
    schedulerCall: { frameworkId: "fw-1", kind: "kill", kill: { taskId: "web.1", agentId: "agent-1", killGracePeriodSeconds: 3 } },
  },
  "schedulerCall.acknowledge": {
    senderId: "fw-1",
    payload: "schedulerCall",
    schedulerCall: { frameworkId: "fw-1", kind: "acknowledge", acknowledge: { agentId: "agent-1", taskId: "web.1", uuid } },
  },
  "schedulerCall.reconcile": {
    senderId: "fw-1",
    payload: "schedulerCall",
    schedulerCall: {
      frameworkId: "fw-1",
      kind: "reconcile",
      reconcile: { tasks: [{ taskId: "web.1", agentId: "agent-1" }, { taskId: "web.2", agentId: "" }] },
    },
  },
  "schedulerCall.message": {
    senderId: "fw-1",
    payload: "schedulerCall",
    schedulerCall: { frameworkId: "fw-1", kind: "message", message: { agentId: "agent-1", data: new Uint8Array([0, 255]) } },
  },
  "schedulerCall.heartbeat": {
    senderId: "fw-1",
    payload: "schedulerCall",
    schedulerCall: { frameworkId: "fw-1", kind: "heartbeat", heartbeat: {} },
  },
  "schedulerEvent.subscribed": {
    senderId: "master-1",
    epoch: 3,
    payload: "schedulerEvent",
    schedulerEvent: {
      kind: "subscribed",
      subscribed: { frameworkId: "fw-1", heartbeatIntervalSeconds: 15, masterId: "master-1" },
    },
  },
  "schedulerEvent.offers": {
    senderId: "master-1",
    epoch: 3,
    payload: "schedulerEvent",
    schedulerEvent: { kind: "offers", offers: { offers: [offer] } },
  },
  "schedulerEvent.rescind": {
    senderId: "master-1",
    epoch: 3,
    payload: "schedulerEvent",
    schedulerEvent: { kind: "rescind", rescind: { offerId: "offer-7" } },
  },
  "schedulerEvent.update": {
    senderId: "master-1",
    epoch: 3,
    payload: "schedulerEvent",
    schedulerEvent: { kind: "update", update: { status: taskStatus } },
  },
  "schedulerEvent.message": {
    senderId: "master-1",
    epoch: 3,
    payload: "schedulerEvent",
    schedulerEvent: { kind: "message", message: { agentId: "agent-1", data: new Uint8Array([42]) } },
  },
  "schedulerEvent.failure": {
    senderId: "master-1",
    epoch: 3,
    payload: "schedulerEvent",
    schedulerEvent: { kind: "failure", failure: { agentId: "agent-1", status: 137 } },
  },
  "schedulerEvent.error": {
    senderId: "master-1",
    epoch: 3,
    payload: "schedulerEvent",
    schedulerEvent: { kind: "error", error: { message: "framework was torn down" } },
  },
  "schedulerEvent.heartbeat": {
    senderId: "master-1",
    epoch: 3,
    payload: "schedulerEvent",
    schedulerEvent: { kind: "heartbeat", heartbeat: {} },
  },
  "callResponse.ok": {
    senderId: "master-1",
    epoch: 3,
    callId: "call-1",
    payload: "callResponse",
    callResponse: { ok: true, errorCode: "", message: "" },
  },
  "callResponse.error": {
    senderId: "master-1",
    epoch: 3,
    callId: "call-1",
    payload: "callResponse",
    callResponse: { ok: false, errorCode: "CORRAL_ERR_OFFER_RESCINDED", message: "offer offer-7 is gone" },
  },
  "agentToMaster.register": {
    senderId: "boot-5f2a",
    payload: "agentToMaster",
    agentToMaster: { kind: "register", register: { agentInfo: { ...agentInfo, id: "" }, version: "0.1.0" } },
  },
  "agentToMaster.reregister": {
    senderId: "agent-1",
    payload: "agentToMaster",
    agentToMaster: {
      kind: "reregister",
      reregister: {
        agentInfo,
        version: "0.1.0",
        tasks: [{ frameworkId: "fw-1", task: taskInfo, status: { ...taskStatus, state: "TASK_RUNNING" } }],
        frameworks: [frameworkInfo],
        listening: true,
      },
    },
  },
  "agentToMaster.pong": {
    senderId: "agent-1",
    payload: "agentToMaster",
    agentToMaster: { kind: "pong", pong: { seq: 2 ** 40 } },
  },
  "agentToMaster.statusUpdate": {
    senderId: "agent-1",
    payload: "agentToMaster",
    agentToMaster: { kind: "statusUpdate", statusUpdate: { frameworkId: "fw-1", status: taskStatus } },
  },
  "agentToMaster.unregisterNotice": {
    senderId: "agent-1",
    payload: "agentToMaster",
    agentToMaster: { kind: "unregisterNotice", unregisterNotice: { reason: "drained for maintenance" } },
  },
  "masterToAgent.registered": {
    senderId: "master-1",
    epoch: 3,
    payload: "masterToAgent",
    masterToAgent: {
      kind: "registered",
      registered: { agentId: "agent-1", pingIntervalSeconds: 15, pingTimeoutSeconds: 75, masterId: "master-1" },
    },
  },
  "masterToAgent.reregistered": {
    senderId: "master-1",
    epoch: 3,
    payload: "masterToAgent",
    masterToAgent: {
      kind: "reregistered",
      reregistered: { agentId: "agent-1", pingIntervalSeconds: 15, pingTimeoutSeconds: 75, masterId: "master-1" },
    },
  },
  "masterToAgent.ping": {
    senderId: "master-1",
    epoch: 3,
    payload: "masterToAgent",
    masterToAgent: { kind: "ping", ping: { seq: 0 } },
  },
  "masterToAgent.runTask": {
    senderId: "master-1",
    epoch: 3,
    payload: "masterToAgent",
    masterToAgent: { kind: "runTask", runTask: { framework: frameworkInfo, task: taskInfo } },
  },
  "masterToAgent.killTask": {
    senderId: "master-1",
    epoch: 3,
    payload: "masterToAgent",
    masterToAgent: { kind: "killTask", killTask: { frameworkId: "fw-1", taskId: "web.1" } },
  },
  "masterToAgent.shutdownFramework": {
    senderId: "master-1",
    epoch: 3,
    payload: "masterToAgent",
    masterToAgent: { kind: "shutdownFramework", shutdownFramework: { frameworkId: "fw-1" } },
  },
  "masterToAgent.statusUpdateAck": {
    senderId: "master-1",
    epoch: 3,
    payload: "masterToAgent",
    masterToAgent: { kind: "statusUpdateAck", statusUpdateAck: { frameworkId: "fw-1", taskId: "web.1", uuid } },
  },
  "masterToAgent.reregisterRequest": {
    senderId: "master-1",
    epoch: 4,
    payload: "masterToAgent",
    masterToAgent: { kind: "reregisterRequest", reregisterRequest: {} },
  },
  masterInfo: {
    senderId: "master-1",
    epoch: 4,
    payload: "masterInfo",
    masterInfo: { id: "master-1", epoch: 4, hostname: "m1.example", httpEndpoint: "http://10.0.0.1:5050", version: "0.1.0" },
  },
};

/** A logger that remembers what it was told. */
export class MemoryLogger implements Logger {
  readonly entries: Array<{ level: string; obj: object; msg: string | undefined }> = [];
  debug(obj: object, msg?: string): void {
    this.entries.push({ level: "debug", obj, msg });
  }
  info(obj: object, msg?: string): void {
    this.entries.push({ level: "info", obj, msg });
  }
  warn(obj: object, msg?: string): void {
    this.entries.push({ level: "warn", obj, msg });
  }
  error(obj: object, msg?: string): void {
    this.entries.push({ level: "error", obj, msg });
  }
  at(level: string): Array<{ level: string; obj: object; msg: string | undefined }> {
    return this.entries.filter((e) => e.level === level);
  }
}
