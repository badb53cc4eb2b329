/** `corral agent`: one agent process on an existing NATS. */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AGENT_ID_FILE, createAgent } from "../../agent/agent.ts";
import { parseAgentResources } from "../../agent/agent-logic.ts";
import { parseAttributes } from "../../agent/resources-detect.ts";
import { DEFAULT_DISK_WATCH_INTERVAL_MS, DEFAULT_GC_DELAY_MS, DEFAULT_GC_DISK_HEADROOM } from "../../agent/sandbox-gc.ts";
import { CLUSTER_FLAGS, connect, makeLogger, resolveCluster, untilSignal } from "../common.ts";
import { containerizerFromFlags, ISOLATION_FLAGS } from "../containerizer.ts";
import { pathIdProblem } from "../../sdk/task-key.ts";
import { tokenProblem } from "../../sdk/wire/subjects.ts";
import { durationFlag, numberFlag, parseFlags, portFlag, UsageError, type FlagSpec } from "../options.ts";

export const AGENT_FLAGS: Record<string, FlagSpec> = {
  ...CLUSTER_FLAGS,
  "log-level": { type: "string", help: "pino log level", default: "info" },
  "work-dir": { type: "string", help: "where sandboxes, the agent id and checkpoints live (required)" },
  resources: { type: "string", help: "resources in Mesos text form, e.g. 'cpus:4;mem:8192;ports:[31000-32000]' (default: detected)" },
  attributes: { type: "string", help: "attributes, e.g. 'rack:r1;zone:a'" },
  hostname: { type: "string", help: "hostname advertised in offers (default: this host's name)" },
  host: { type: "string", help: "HTTP listen address", default: "127.0.0.1" },
  port: { type: "string", help: "HTTP port (/state, /metrics, /files/read)", default: "5051" },
  "gc-delay": { type: "string", help: "how long a finished task's sandbox is kept once its final update is acknowledged, e.g. 2d (shortened as the disk fills)", default: "1w" },
  "disk-watch-interval": { type: "string", help: "how often the work dir's disk usage is read to remove sandboxes sooner", default: "1m" },
  "gc-disk-headroom": { type: "string", help: "share of the disk (0 to 1) sandbox removal keeps free: sandboxes older than gc-delay * (1 - headroom - usage) go", default: "0.1" },
  "agent-id": { type: "string", help: "the agent's id, chosen ahead (for per-agent NATS permissions); kept in the work dir, which must not belong to another id" },
  ...ISOLATION_FLAGS,
};

export async function agentCommand(args: string[]): Promise<number> {
  const { values } = parseFlags(args, AGENT_FLAGS);
  const workDir = values["work-dir"] as string | undefined;
  if (!workDir) throw new UsageError("--work-dir is required (or set CORRAL_WORK_DIR)");
  const { nats, cluster } = resolveCluster(values);
  // The agent checks these too, but the operator should hear of a bad flag before anything starts.
  const httpPort = portFlag(values, "port") ?? 5051;
  if (values.resources) checkFlag("resources", () => parseAgentResources(values.resources as string));
  if (values.attributes) checkFlag("attributes", () => parseAttributes(values.attributes as string));
  const gc = sandboxGcFlags(values);
  if (values["agent-id"] !== undefined) await claimAgentId(workDir, values["agent-id"] as string);
  const log = makeLogger(values["log-level"] as string);
  const { containerizer, isolation } = await containerizerFromFlags(values, log, values.hostname as string | undefined);
  const transport = await connect(nats, "corral-agent", log);
  const agent = createAgent({
    containerizer,
    isolation,
    cluster,
    transport,
    workDir,
    log,
    httpHost: values.host as string,
    httpPort,
    ...gc,
    ...(values.resources ? { resources: values.resources as string } : {}),
    ...(values.attributes ? { attributes: values.attributes as string } : {}),
    ...(values.hostname ? { hostname: values.hostname as string } : {}),
  });
  await agent.start();
  log.info({ httpUrl: agent.httpUrl(), nats, cluster }, "agent running");
  await untilSignal();
  await agent.stop();
  await transport.close();
  return 0;
}

/** The sandbox collection flags (Mesos's `--gc_delay`, `--disk_watch_interval`, `--gc_disk_headroom`). */
function sandboxGcFlags(values: Record<string, string | boolean | undefined>): { gcDelayMs: number; diskWatchIntervalMs: number; gcDiskHeadroom: number } {
  const gcDelayMs = durationFlag(values, "gc-delay") ?? DEFAULT_GC_DELAY_MS;
  const diskWatchIntervalMs = durationFlag(values, "disk-watch-interval") ?? DEFAULT_DISK_WATCH_INTERVAL_MS;
  if (!(diskWatchIntervalMs > 0)) throw new UsageError(`--disk-watch-interval must be longer than 0, got '${String(values["disk-watch-interval"])}'`);
  const gcDiskHeadroom = numberFlag(values, "gc-disk-headroom") ?? DEFAULT_GC_DISK_HEADROOM;
  if (!(gcDiskHeadroom >= 0 && gcDiskHeadroom <= 1)) throw new UsageError(`--gc-disk-headroom must be a number from 0 to 1, got '${String(values["gc-disk-headroom"])}'`);
  return { gcDelayMs, diskWatchIntervalMs, gcDiskHeadroom };
}

/** Runs a check of a flag's value; its error becomes a usage error naming the flag. */
function checkFlag(flag: string, check: () => unknown): void {
  try {
    check();
  } catch (err) {
    const message = (err as Error).message;
    throw new UsageError(`--${flag}: ${message.startsWith(`${flag}: `) ? message.slice(flag.length + 2) : message}`);
  }
}

/**
 * Makes `id` the agent's id: written to the work dir's id file, where the agent reads it and
 * re-registers under it from its first start (the master otherwise picks an id at the first
 * registration, which per-agent permissions cannot know ahead). A work dir that already belongs
 * to another id is refused: its checkpoints are that agent's.
 */
async function claimAgentId(workDir: string, id: string): Promise<void> {
  const problem = tokenProblem(id) ?? pathIdProblem(id);
  if (problem !== undefined) throw new UsageError(`--agent-id: ${problem}`);
  const path = join(workDir, AGENT_ID_FILE);
  const existing = await readFile(path, "utf8").then(
    (text) => text.trim(),
    () => undefined,
  );
  if (existing === id) return;
  if (existing !== undefined && existing !== "") throw new UsageError(`--agent-id: ${workDir} belongs to agent '${existing}', not '${id}'`);
  await mkdir(workDir, { recursive: true });
  await writeFile(path, `${id}\n`, "utf8");
}
