/**
 * Reading a task's output after the fact, for client commands: a task's stdout and stderr stay in
 * its sandbox on its agent (as in Mesos), served by the agent's `/files/read`; the agent's address
 * comes from the master's `/state`.
 */

import { fetchOrExplain } from "./common.ts";

/**
 * Agent id to its HTTP endpoint, from the master's `/state`.
 * @throws an Error saying why the master could not be read (unreachable, or an error status)
 */
export async function readAgentEndpoints(masterUrl: string): Promise<Map<string, string>> {
  const response = await fetchOrExplain(`${masterUrl}/state`, "the master", masterUrl);
  if (!response.ok) throw new Error(`${masterUrl}/state answered ${response.status}`);
  const state = (await response.json()) as { agents?: Array<{ id: string; httpEndpoint: string }> };
  return new Map((state.agents ?? []).filter((a) => a.httpEndpoint).map((a) => [a.id, a.httpEndpoint]));
}

/** {@link readAgentEndpoints}, empty when the master cannot be read. */
export async function agentEndpoints(masterUrl: string): Promise<Map<string, string>> {
  return readAgentEndpoints(masterUrl).catch(() => new Map<string, string>());
}

/** The `/files/read` URL of one of a task's sandbox files (`stdout`, `stderr`). */
export function sandboxFileUrl(endpoint: string, frameworkId: string, taskId: string, path: string): string {
  return `${endpoint}/files/read?frameworkId=${encodeURIComponent(frameworkId)}&taskId=${encodeURIComponent(taskId)}&path=${encodeURIComponent(path)}`;
}

/** Bytes read from a file's end to find its last lines: a failed task's last words, not its log. */
const TAIL_BYTES = 4096;

/**
 * The last `lines` non-empty lines of a sandbox file, or undefined when it cannot be read (the agent
 * gone, the sandbox collected). Reads its size first (`offset=-1`), then only its end.
 */
export async function tailSandboxFile(url: string, lines: number): Promise<string[] | undefined> {
  try {
    const size = await fetch(`${url}&offset=-1`);
    if (!size.ok) return undefined;
    const { totalSize } = (await size.json()) as { totalSize: number };
    const start = Math.max(0, totalSize - TAIL_BYTES);
    const read = await fetch(`${url}&offset=${start}&length=${TAIL_BYTES}`);
    if (!read.ok) return undefined;
    const { data } = (await read.json()) as { data: string };
    const all = data.split("\n").filter((line) => line.trim() !== "");
    // A read from the middle of the file starts in the middle of a line.
    if (start > 0) all.shift();
    return all.slice(-lines);
  } catch {
    return undefined;
  }
}
