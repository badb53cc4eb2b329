/** `corral state`: what the master knows, as a short summary or (`--json`) in full. */
import { fetchOrExplain, resolveMasterUrl } from "../common.ts";
import { parseFlags, type FlagSpec } from "../options.ts";

export const STATE_FLAGS: Record<string, FlagSpec> = {
  master: { type: "string", help: "master HTTP URL (default: the cluster `corral up` started)" },
  json: { type: "boolean", help: "print the master's /state JSON" },
};

interface StateJson {
  masterId: string;
  agents: Array<{ id: string; hostname: string; resources: Record<string, number>; used: Record<string, number>; offered: Record<string, number>; tasks: number }>;
  unreachableAgents: Array<{ id: string; hostname: string }>;
  frameworks: Array<{ id: string; name: string; roles: string[]; connected: boolean; tasks: Array<{ id: string; state: string; agentId: string }> }>;
  roles: Array<{ role: string; weight: number; share: number }>;
}

const fmt = (r: Record<string, number>) =>
  ["cpus", "mem", "disk"].filter((k) => r[k] !== undefined).map((k) => `${k} ${Math.round(r[k]! * 100) / 100}`).join(", ") || "-";

export async function stateCommand(args: string[]): Promise<number> {
  const { values } = parseFlags(args, STATE_FLAGS);
  const url = resolveMasterUrl(values);
  const response = await fetchOrExplain(`${url}/state`, "the master", url);
  if (!response.ok) {
    // A standby that knows no leader yet answers 503 with why; say it rather than just the status.
    const body = (await response.json().catch(() => undefined)) as { message?: unknown } | undefined;
    throw new Error(`${url}/state answered ${response.status}${typeof body?.message === "string" ? `: ${body.message}` : ""}`);
  }
  const state = (await response.json()) as StateJson;
  if (values.json) {
    console.log(JSON.stringify(state, null, 2));
    return 0;
  }
  console.log(`master ${state.masterId} at ${url}`);
  console.log(`\nagents (${state.agents.length}${state.unreachableAgents.length ? `, ${state.unreachableAgents.length} unreachable` : ""}):`);
  for (const a of state.agents) console.log(`  ${a.id}  ${a.hostname}  total: ${fmt(a.resources)}  used: ${fmt(a.used)}  offered: ${fmt(a.offered)}  tasks: ${a.tasks}`);
  console.log(`\nframeworks (${state.frameworks.length}):`);
  for (const f of state.frameworks) {
    console.log(`  ${f.name}  ${f.id}  roles: ${f.roles.join(",")}  ${f.connected ? "connected" : "disconnected"}  tasks: ${f.tasks.length}`);
    for (const t of f.tasks) console.log(`    ${t.id}  ${t.state}  on ${t.agentId}`);
  }
  if (state.roles.length > 0) {
    console.log("\nroles:");
    for (const r of state.roles) console.log(`  ${r.role}  weight ${r.weight}  share ${r.share.toFixed(3)}`);
  }
  return 0;
}
