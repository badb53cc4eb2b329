/**
 * `corral master`: one master process on an existing NATS. With `--ha`, one of several masters of
 * the cluster: they elect a leader through a lease in the registry's KV bucket; standbys serve
 * `/health` pointing to it and redirect `/state` and the operator endpoints to it.
 */
import { readFile } from "node:fs/promises";
import { roleAclProblem, type FrameworkRoleAcl } from "../../master/authz.ts";
import { createMaster, openMasterLeaseStore, type MasterElectionOptions } from "../../master/shell.ts";
import { resolveLeaseTimings } from "../../sdk/leader-lease.ts";
import { CLUSTER_FLAGS, connect, makeLogger, resolveCluster, untilSignal } from "../common.ts";
import { durationFlag, numberFlag, parseFlags, portFlag, UsageError, type FlagSpec } from "../options.ts";

export const MASTER_FLAGS: Record<string, FlagSpec> = {
  ...CLUSTER_FLAGS,
  "log-level": { type: "string", help: "pino log level", default: "info" },
  host: { type: "string", help: "HTTP listen address", default: "127.0.0.1" },
  port: { type: "string", help: "HTTP port (/state, /metrics, operator endpoints)", default: "5050" },
  "allocation-interval": { type: "string", help: "periodic allocation run", default: "1s" },
  "agent-ping-interval": { type: "string", help: "how often agents are pinged", default: "15s" },
  "max-missed-pings": { type: "string", help: "pings an agent may miss before it is unreachable", default: "5" },
  "offer-timeout": { type: "string", help: "rescind offers not answered within this time (default: never)" },
  "recovery-offer-hold": { type: "string", help: "after a restart or failover, hold offers at most this long for the registry's agents to re-register", default: "10s" },
  "recovery-agent-fraction": {
    type: "string",
    help: "after a restart or failover, hold offers until this fraction (0..1) of the registry's agents is back (default: 0.8 when a role has a quota, else 0, as Mesos; an agent is never offered before it is back)",
  },
  "kv-replicas": { type: "string", help: "replicas of the registry's JetStream bucket when this master creates it (3 on a three-node NATS cluster)", default: "1" },
  ha: { type: "boolean", help: "run as one of several masters: elect a leader through the registry's KV lease; only the leader serves the bus" },
  lease: { type: "string", help: "--ha: a leader whose lease is unrenewed this long is replaced", default: "1500ms" },
  "lease-renew-interval": { type: "string", help: "--ha: how often the leader renews its lease (it steps down this long before the lease ends)", default: "250ms" },
  "advertise-url": { type: "string", help: "--ha: the URL standbys send clients to (default: this master's http://<host>:<port>, with this machine's host name when --host is 0.0.0.0 or ::)" },
  "require-principal": {
    type: "boolean",
    help: "serve only frameworks with a principal, calling on corral.<cluster>.master.scheduler.<principal>; calls on the shared subject are refused (CORRAL_ERR_UNAUTHENTICATED)",
  },
  "role-acl": {
    type: "string",
    help: 'JSON file of the roles each principal\'s frameworks may use, e.g. {"principals": {"marathon": ["web"], "ops": "ANY"}, "permissive": false} (default: any role for every framework)',
  },
};

/** Reads `--role-acl`: a file that cannot be read, is not JSON or is not an ACL is a usage error naming the flag, the file and the field. */
export async function roleAclFromFlags(values: Record<string, string | boolean | undefined>): Promise<FrameworkRoleAcl | undefined> {
  const path = values["role-acl"];
  if (typeof path !== "string" || path === "") return undefined;
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new UsageError(`--role-acl ${path}: cannot be read (${(err as Error).message})`);
  }
  let acl: unknown;
  try {
    acl = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--role-acl ${path}: not JSON (${(err as Error).message})`);
  }
  const problem = roleAclProblem(acl);
  if (problem) throw new UsageError(`--role-acl ${path}: ${problem}`);
  return acl as FrameworkRoleAcl;
}

/** The election options of `--ha` flags; bad timings are a usage error naming the flag's rule. */
export function electionFromFlags(values: Record<string, string | boolean | undefined>): MasterElectionOptions | undefined {
  if (values.ha !== true) return undefined;
  const leaseMs = durationFlag(values, "lease") ?? 1500;
  const renewIntervalMs = durationFlag(values, "lease-renew-interval") ?? 250;
  const timings = { leaseMs, renewIntervalMs, stepDownMarginMs: renewIntervalMs, pollIntervalMs: Math.max(10, Math.min(100, Math.floor(renewIntervalMs / 2))) };
  try {
    resolveLeaseTimings(timings);
  } catch (err) {
    throw new UsageError(`--lease ${leaseMs}ms must exceed twice --lease-renew-interval ${renewIntervalMs}ms (${(err as Error).message})`);
  }
  const advertisedUrl = values["advertise-url"] as string | undefined;
  if (advertisedUrl !== undefined && !/^https?:\/\/[^/\s]+/.test(advertisedUrl)) {
    throw new UsageError(`--advertise-url must be an http(s) URL such as http://master-1:5050, got '${advertisedUrl}'`);
  }
  return { timings, ...(advertisedUrl ? { advertisedUrl } : {}) };
}

export async function masterCommand(args: string[]): Promise<number> {
  const { values } = parseFlags(args, MASTER_FLAGS);
  const { nats, cluster } = resolveCluster(values);
  const httpPort = portFlag(values, "port") ?? 5050;
  const roleAcl = await roleAclFromFlags(values);
  const log = makeLogger(values["log-level"] as string);
  const transport = await connect(nats, "corral-master", log);
  const offerTimeoutMs = durationFlag(values, "offer-timeout");
  const recoveryAgentFraction = numberFlag(values, "recovery-agent-fraction");
  if (recoveryAgentFraction !== undefined && !(recoveryAgentFraction >= 0 && recoveryAgentFraction <= 1)) throw new UsageError("--recovery-agent-fraction must be a number from 0 to 1");
  const election = electionFromFlags(values);
  // The lease gets a connection of its own, so renewals never queue behind the bus traffic.
  const leaseTransport = election ? await connect(nats, "corral-master-lease", log) : undefined;
  const storeReplicas = numberFlag(values, "kv-replicas") ?? 1;
  if (!Number.isInteger(storeReplicas) || storeReplicas < 1 || storeReplicas > 5) throw new UsageError("--kv-replicas must be an integer from 1 to 5 (JetStream's limit)");
  if (election && leaseTransport) election.store = await openMasterLeaseStore(leaseTransport.connection, cluster, storeReplicas);
  const master = createMaster({
    cluster,
    transport,
    httpHost: values.host as string,
    httpPort,
    log,
    storeReplicas,
    ...(election ? { election } : {}),
    config: {
      allocationIntervalMs: durationFlag(values, "allocation-interval") ?? 1000,
      agentPingIntervalMs: durationFlag(values, "agent-ping-interval") ?? 15_000,
      maxMissedPings: numberFlag(values, "max-missed-pings") ?? 5,
      recoveryOfferHoldMs: durationFlag(values, "recovery-offer-hold") ?? 10_000,
      ...(recoveryAgentFraction !== undefined ? { recoveryAgentFraction } : {}),
      ...(offerTimeoutMs !== undefined ? { offerTimeoutMs } : {}),
      ...(values["require-principal"] === true ? { requirePrincipal: true } : {}),
      ...(roleAcl !== undefined ? { roleAcl } : {}),
    },
  });
  await master.start();
  log.info({ httpUrl: master.httpUrl(), nats, cluster, ha: election !== undefined, leader: master.isLeader() }, "master running");
  await untilSignal();
  await master.stop();
  await transport.close();
  await leaseTransport?.close();
  return 0;
}
