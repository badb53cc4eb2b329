/**
 * Where `corral up` leaves the address of the cluster it started, so that `corral state`,
 * `corral run` and friends find it without flags: `$CORRAL_HOME/cluster.json`
 * (default `~/.corral/cluster.json`).
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";

/** What a running local cluster publishes about itself. */
export interface ClusterFile {
  cluster: string;
  nats: string;
  masterUrl: string;
  agentUrls: string[];
  marathonUrl?: string;
  pid: number;
  startedAt: string;
}

/** `$CORRAL_HOME`, default `~/.corral`. */
export function corralHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.CORRAL_HOME ?? join(homedir(), ".corral");
}

export function clusterFilePath(env: NodeJS.ProcessEnv = process.env): string {
  return join(corralHome(env), "cluster.json");
}

export function writeClusterFile(file: ClusterFile, env: NodeJS.ProcessEnv = process.env): string {
  const path = clusterFilePath(env);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(file, null, 2)}\n`);
  return path;
}

/** The cluster file of a live `corral up`, or undefined (missing, unreadable, or its process is gone). */
export function readClusterFile(env: NodeJS.ProcessEnv = process.env): ClusterFile | undefined {
  try {
    const file = JSON.parse(readFileSync(clusterFilePath(env), "utf8")) as ClusterFile;
    process.kill(file.pid, 0);
    return file;
  } catch {
    return undefined;
  }
}

export function removeClusterFile(pid: number, env: NodeJS.ProcessEnv = process.env): void {
  try {
    const file = JSON.parse(readFileSync(clusterFilePath(env), "utf8")) as ClusterFile;
    if (file.pid === pid) rmSync(clusterFilePath(env), { force: true });
  } catch {
    // Nothing to remove.
  }
}
