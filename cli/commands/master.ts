/** `corral master`: one master process on an existing NATS. */
import { createMaster } from "../../master/shell.ts";
import { CLUSTER_FLAGS, connect, makeLogger, resolveCluster, untilSignal } from "../common.ts";
import { durationFlag, numberFlag, parseFlags, type FlagSpec } from "../options.ts";

export const MASTER_FLAGS: Record<string, FlagSpec> = {
  ...CLUSTER_FLAGS,
  "log-level": { type: "string", help: "pino log level", default: "info" },
  host: { type: "string", help: "HTTP listen address", default: "127.0.0.1" },
  port: { type: "string", help: "HTTP port (/state, /metrics, operator endpoints)", default: "5050" },
  "allocation-interval": { type: "string", help: "periodic allocation run", default: "1s" },
  "agent-ping-interval": { type: "string", help: "how often agents are pinged", default: "15s" },
  "max-missed-pings": { type: "string", help: "pings an agent may miss before it is unreachable", default: "5" },
  "offer-timeout": { type: "string", help: "rescind offers not answered within this time (default: never)" },
};

export async function masterCommand(args: string[]): Promise<number> {
  const { values } = parseFlags(args, MASTER_FLAGS);
  const { nats, cluster } = resolveCluster(values);
  const log = makeLogger(values["log-level"] as string);
  const transport = await connect(nats, "corral-master", log);
  const offerTimeoutMs = durationFlag(values, "offer-timeout");
  const master = createMaster({
    cluster,
    transport,
    httpHost: values.host as string,
    httpPort: numberFlag(values, "port") ?? 5050,
    log,
    config: {
      allocationIntervalMs: durationFlag(values, "allocation-interval") ?? 1000,
      agentPingIntervalMs: durationFlag(values, "agent-ping-interval") ?? 15_000,
      maxMissedPings: numberFlag(values, "max-missed-pings") ?? 5,
      ...(offerTimeoutMs !== undefined ? { offerTimeoutMs } : {}),
    },
  });
  await master.start();
  log.info({ httpUrl: master.httpUrl(), nats, cluster }, "master running");
  await untilSignal();
  await master.stop();
  await transport.close();
  return 0;
}
