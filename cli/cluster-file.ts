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

/**
 * Whether `pid` is a live `corral` process. A pid whose process is gone, or (where /proc tells)
 * was reused by another program, is not: its lock or cluster file was left by a `corral up` that
 * died without cleaning up.
 */
function isLiveCorral(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("corral");
  } catch {
    return true; // No /proc to ask: a live pid is taken at its word.
  }
}

/**
 * Takes `<workDir>/up.lock` for this process, so that a second `corral up` cannot start a
 * nats-server on the same JetStream store or agents on the same work dirs (it would recover, and
 * kill, the first one's tasks). The file is created exclusively, so of two started at once one
 * wins; a lock whose process is gone is taken over. Throws, naming the holder and what to do,
 * when a live `corral up` holds it. Returns the function that releases it.
 */
export function lockWorkDir(workDir: string, pid = process.pid): () => void {
  const path = join(workDir, "up.lock");
  mkdirSync(workDir, { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(path, `${pid}\n`, { flag: "wx" });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    let holder = Number.NaN;
    try {
      holder = Number(readFileSync(path, "utf8").trim());
    } catch {
      // Removed meanwhile, or not ours to read: try again below.
    }
    if (isLiveCorral(holder) && holder !== pid) {
      throw new Error(
        `${workDir} is in use by another corral up (pid ${holder}); stop that one first (Ctrl-C in its terminal, or kill -INT ${holder}), ` +
          "or start this one with its own --work-dir (or CORRAL_HOME) and ports",
      );
    }
    if (attempt >= 3) throw new Error(`cannot take the lock ${path}: it keeps reappearing; is another corral up starting?`);
    rmSync(path, { force: true }); // Left by a corral up that is gone.
  }
  return () => {
    try {
      if (Number(readFileSync(path, "utf8").trim()) === pid) rmSync(path, { force: true });
    } catch {
      // Already gone.
    }
  };
}

/** The cluster file of a live `corral up`, or undefined (missing, unreadable, or its process is gone). */
export function readClusterFile(env: NodeJS.ProcessEnv = process.env): ClusterFile | undefined {
  try {
    const file = JSON.parse(readFileSync(clusterFilePath(env), "utf8")) as ClusterFile;
    return isLiveCorral(file.pid) ? file : undefined;
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
