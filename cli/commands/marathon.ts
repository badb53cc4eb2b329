/**
 * `corral marathon`: one Marathon process on an existing NATS. With `--ha`, one of several
 * Marathons of the cluster: they elect a leader through a lease in Marathon's KV bucket; the
 * leader runs the framework, standbys forward the REST API to it and take over when its lease
 * lapses. A deposed leader exits (status 1), as Marathon does, for its supervisor to restart it.
 */
import { createMarathon, MARATHON_DEFAULTS, type MarathonOptions } from "../../frameworks/marathon/marathon.ts";
import { DEFAULT_CORE_CONFIG, type MarathonCoreConfig } from "../../frameworks/marathon/core.ts";
import { JetStreamMarathonStore, marathonBucket } from "../../frameworks/marathon/store.ts";
import { CLUSTER_FLAGS, connect, makeLogger, resolveCluster, untilSignal } from "../common.ts";
import { durationFlag, numberFlag, parseFlags, UsageError, type FlagSpec } from "../options.ts";
import { tokenProblem } from "../../sdk/wire/subjects.ts";

/** Marathon's own default lease: a leader silent this long is replaced. */
const DEFAULT_LEASE = "5s";

export const MARATHON_FLAGS: Record<string, FlagSpec> = {
  ...CLUSTER_FLAGS,
  "log-level": { type: "string", help: "pino log level", default: "info" },
  "http-host": { type: "string", help: "HTTP listen address of the v2 REST API", default: MARATHON_DEFAULTS.httpHost },
  "http-port": { type: "string", help: "HTTP port of the v2 REST API", default: String(MARATHON_DEFAULTS.httpPort) },
  "advertise-url": { type: "string", help: "the URL other Marathons and clients reach this one at (X-Marathon-Leader, /v2/leader) (default: http://<http-host>:<http-port>)" },
  ha: { type: "boolean", help: "run as one of several Marathons: elect a leader through a lease in the KV bucket; standbys forward the API to it" },
  lease: { type: "string", help: "--ha: a leader whose lease is unrenewed this long is replaced (it renews every third of it)", default: DEFAULT_LEASE },
  "framework-name": { type: "string", help: "the framework's name at the master", default: MARATHON_DEFAULTS.frameworkName },
  role: { type: "string", help: "the framework's role (apps are offered its reservations and unreserved resources)", default: "default" },
  principal: { type: "string", help: "the framework's principal: Marathon calls the master on corral.<cluster>.master.scheduler.<principal> (give its NATS user those subjects alone)" },
  "failover-timeout": { type: "string", help: "how long the master keeps the tasks while no Marathon is connected", default: `${MARATHON_DEFAULTS.failoverTimeoutSeconds / 3600}h` },
  "max-instances-per-offer": { type: "string", help: "instances launched on one offer per pass", default: String(DEFAULT_CORE_CONFIG.maxInstancesPerOffer) },
  "task-launch-timeout": { type: "string", help: "a task not RUNNING this long after its launch is killed and replaced", default: `${DEFAULT_CORE_CONFIG.taskLaunchTimeoutMs / 1000}s` },
  "decline-offer-duration": { type: "string", help: "how long offers declined while nothing waits are refused", default: `${DEFAULT_CORE_CONFIG.idleDeclineRefuseSeconds}s` },
  "kv-replicas": { type: "string", help: "replicas of Marathon's JetStream bucket when this Marathon creates it (3 on a three-node NATS cluster)", default: "1" },
  "tick-interval": { type: "string", help: "how often timers (launch timeouts, backoff delays, health checks) are looked at", default: `${MARATHON_DEFAULTS.tickIntervalMs}ms` },
};

function positive(value: number | undefined, flag: string, integer = false): number | undefined {
  if (value === undefined) return undefined;
  if (!(value > 0) || (integer && !Number.isInteger(value))) throw new UsageError(`--${flag} must be a positive ${integer ? "integer" : "duration"}, got '${value}'`);
  return value;
}

/** The factory's options of the flags (without transport and log); bad values are usage errors naming the flag. */
export function marathonOptionsFromFlags(values: Record<string, string | boolean | undefined>): Omit<MarathonOptions, "transport"> {
  const httpPort = numberFlag(values, "http-port") ?? MARATHON_DEFAULTS.httpPort;
  if (!Number.isInteger(httpPort) || httpPort < 0 || httpPort > 65535) throw new UsageError(`--http-port must be a port number from 0 to 65535, got '${String(values["http-port"])}'`);
  const advertisedUrl = values["advertise-url"] as string | undefined;
  if (advertisedUrl !== undefined && !/^https?:\/\/[^/\s]+\/?$/.test(advertisedUrl)) throw new UsageError(`--advertise-url must be an http(s) URL with a host and no path, e.g. http://10.0.0.5:8080, got '${advertisedUrl}'`);
  const leaseMs = positive(durationFlag(values, "lease"), "lease");
  // Renewals every third of the lease need room between them and the step-down margin.
  if (leaseMs !== undefined && leaseMs < 300) throw new UsageError(`--lease must be at least 300ms, got ${leaseMs}ms`);
  const failoverTimeoutMs = positive(durationFlag(values, "failover-timeout"), "failover-timeout");
  const principal = values.principal as string | undefined;
  const principalProblem = principal === undefined || principal === "" ? undefined : tokenProblem(principal);
  if (principalProblem) throw new UsageError(`--principal: ${principalProblem}`);
  const core: Partial<MarathonCoreConfig> = {};
  const perOffer = positive(numberFlag(values, "max-instances-per-offer"), "max-instances-per-offer", true);
  if (perOffer !== undefined) core.maxInstancesPerOffer = perOffer;
  const launchTimeoutMs = positive(durationFlag(values, "task-launch-timeout"), "task-launch-timeout");
  if (launchTimeoutMs !== undefined) core.taskLaunchTimeoutMs = launchTimeoutMs;
  const declineMs = positive(durationFlag(values, "decline-offer-duration"), "decline-offer-duration");
  if (declineMs !== undefined) core.idleDeclineRefuseSeconds = declineMs / 1000;
  const tickIntervalMs = positive(durationFlag(values, "tick-interval"), "tick-interval");
  const storeReplicas = numberFlag(values, "kv-replicas") ?? 1;
  if (!Number.isInteger(storeReplicas) || storeReplicas < 1 || storeReplicas > 5) throw new UsageError("--kv-replicas must be an integer from 1 to 5 (JetStream's limit)");
  return {
    storeReplicas,
    httpHost: values["http-host"] as string,
    httpPort,
    frameworkName: values["framework-name"] as string,
    role: values.role as string,
    core,
    ...(principal ? { principal } : {}),
    ...(advertisedUrl !== undefined ? { advertisedUrl } : {}),
    ...(values.ha === true ? { leaderElection: leaseMs !== undefined ? { leaseMs } : {} } : {}),
    ...(failoverTimeoutMs !== undefined ? { failoverTimeoutSeconds: Math.ceil(failoverTimeoutMs / 1000) } : {}),
    ...(tickIntervalMs !== undefined ? { tickIntervalMs } : {}),
  };
}

export async function marathonCommand(args: string[]): Promise<number> {
  const { values } = parseFlags(args, MARATHON_FLAGS);
  const options = marathonOptionsFromFlags(values);
  const { nats, cluster } = resolveCluster(values);
  const log = makeLogger(values["log-level"] as string);
  const transport = await connect(nats, "corral-marathon", log);
  // With --ha the store (and its lease) get a connection of their own, so lease renewals never
  // queue behind the bus traffic of thousands of status updates.
  const storeTransport = options.leaderElection ? await connect(nats, "corral-marathon-store", log) : undefined;
  const store = storeTransport ? await JetStreamMarathonStore.open(storeTransport.connection, { bucket: marathonBucket(cluster), log, ...(options.storeReplicas !== undefined ? { replicas: options.storeReplicas } : {}) }) : undefined;
  const marathon = createMarathon({ ...options, transport, cluster, log: log.child({ component: "marathon" }), ...(store ? { store } : {}) });
  const closeAll = async () => {
    await marathon.stop();
    await transport.close();
    await storeTransport?.close();
  };
  try {
    await marathon.start();
  } catch (err) {
    await closeAll();
    throw err;
  }
  log.info({ httpUrl: marathon.httpUrl(), advertisedUrl: options.advertisedUrl, nats, cluster, ha: options.leaderElection !== undefined, leader: marathon.isLeader() }, "marathon running");
  const ended = await Promise.race([untilSignal().then((signal) => ({ signal })), marathon.whenStopped().then(() => ({ signal: undefined }))]);
  await closeAll();
  if (ended.signal === undefined) {
    // Not asked to stop: deposed, or elected but unable to take over.
    log.error("marathon stopped: it lost (or could not take up) the leadership; exiting so that it restarts as a standby");
    log.flush();
    return 1;
  }
  return 0;
}
