/** What several `corral` commands share: finding the cluster, connecting, logging. */
import { pino, type Logger as PinoLogger } from "pino";
import { connectNats, type NatsTransport } from "../sdk/nats-transport.ts";
import { readClusterFile, type ClusterFile } from "./cluster-file.ts";
import { UsageError, type FlagSpec } from "./options.ts";

/** Flags of every command that talks to a cluster. */
export const CLUSTER_FLAGS: Record<string, FlagSpec> = {
  nats: { type: "string", help: "NATS URL(s) of the cluster, comma-separated (default: the cluster `corral up` started)" },
  cluster: { type: "string", help: "cluster name: the first token of every subject", default: "corral" },
  "log-level": { type: "string", help: "pino log level", default: "warn" },
};

/** The NATS URL and cluster name to use: flags first, then the local `corral up` cluster. */
export function resolveCluster(values: Record<string, string | boolean | undefined>): { nats: string; cluster: string; local: ClusterFile | undefined } {
  const local = readClusterFile();
  const nats = (values.nats as string | undefined) ?? local?.nats;
  if (!nats) throw new UsageError("no cluster: pass --nats nats://host:4222 (or set CORRAL_NATS), or start one with `corral up`");
  const cluster = (values.cluster as string | undefined) ?? local?.cluster ?? "corral";
  return { nats, cluster, local };
}

/** The master's HTTP URL: `--master`, else the local cluster's. */
export function resolveMasterUrl(values: Record<string, string | boolean | undefined>): string {
  const url = (values.master as string | undefined) ?? readClusterFile()?.masterUrl;
  if (!url) throw new UsageError("no master: pass --master http://host:5050 (or set CORRAL_MASTER), or start a cluster with `corral up`");
  if (!/^https?:\/\/[^/\s]+/.test(url)) throw new UsageError(`--master must be an http(s) URL such as http://host:5050, got '${url}'`);
  return url.replace(/\/+$/, "");
}

/** Why a request could not be made, in words: fetch itself only says "fetch failed". */
const CONNECT_ERRORS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ENOTFOUND: "no such host",
  EAI_AGAIN: "host name lookup failed",
  ETIMEDOUT: "timed out",
  ECONNRESET: "connection reset",
  EHOSTUNREACH: "host unreachable",
};

/** Why a fetch failed, in words, from the error it threw (or that error's cause). */
export function explainFetchError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const code = cause?.code;
  return code !== undefined ? `${CONNECT_ERRORS[code] ?? cause?.message ?? code} (${code})` : (cause?.message ?? (err as Error).message);
}

/** GETs `url`; when it cannot be reached, the error names `what`, the base URL and why. */
export async function fetchOrExplain(url: string, what: string, baseUrl: string): Promise<Response> {
  try {
    return await fetch(url);
  } catch (err) {
    throw new Error(`cannot reach ${what} at ${baseUrl}: ${explainFetchError(err)}`);
  }
}

export async function connect(nats: string, name: string, log: PinoLogger): Promise<NatsTransport> {
  return connectNats({ servers: nats.split(",").map((s) => s.trim()), name, log });
}

/** A logger to stderr (or to `file`), structured as the design asks. */
export function makeLogger(level: string, file?: string): PinoLogger {
  return file ? pino({ level }, pino.destination({ dest: file, mkdir: true, sync: false })) : pino({ level }, pino.destination(2));
}

/**
 * Resolves when the process is asked to stop: by default Ctrl-C or SIGTERM; `corral up` adds
 * SIGHUP (its terminal closed), which would otherwise kill it without stopping what it started.
 */
export function untilSignal(signals: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM"]): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const done = (signal: NodeJS.Signals) => {
      for (const s of signals) process.off(s, done);
      resolve(signal);
    };
    for (const s of signals) process.on(s, done);
  });
}
