/**
 * The master's Prometheus text exposition (`GET /metrics`), built from the core's views and
 * counters plus the shell's own counters. Every label set is bounded: resource names come from
 * agents' resources, task states and drop reasons are closed enums.
 *
 * @module
 */

import type { DropCounter } from "../sdk/wire/codec.ts";
import type { MasterCore } from "./core.ts";

/** Counters the shell keeps besides the core's. */
export interface ShellCounters {
  /** Effects that could not be carried out, by effect type. */
  effectErrors: Record<string, number>;
  /** Ticks whose handling threw. */
  tickErrors: number;
  /** Failed registry write attempts. */
  storeWriteFailures: number;
  /** Registry writes applied. */
  storeWrites: number;
  /** Keys with a registry write not yet applied. */
  storePendingKeys: number;
  /** Offers events split because they did not fit in one message. */
  offerEventsSplit: number;
  /** Bus inputs dropped because `maxQueuedInputs` were already waiting. */
  inputsShed: number;
}

/** Escapes a label value per the exposition format. */
function label(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function num(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** Accumulates metric families, each with its HELP and TYPE lines. */
class Exposition {
  private readonly lines: string[] = [];

  family(name: string, type: "counter" | "gauge" | "summary", help: string, samples: Array<[labels: Record<string, string> | undefined, value: number, suffix?: string]>): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value, suffix] of samples) {
      const rendered = labels && Object.keys(labels).length > 0 ? `{${Object.entries(labels).map(([k, v]) => `${k}="${label(v)}"`).join(",")}}` : "";
      this.lines.push(`${name}${suffix ?? ""}${rendered} ${num(value)}`);
    }
  }

  raw(text: string): void {
    this.lines.push(text.trimEnd());
  }

  toString(): string {
    return `${this.lines.join("\n")}\n`;
  }
}

function byResource(values: Record<string, number>): Array<[Record<string, string>, number]> {
  return Object.keys(values)
    .sort()
    .map((resource) => [{ resource }, values[resource]!]);
}

/** Renders every master metric. */
export function renderMasterMetrics(core: MasterCore, drops: DropCounter, shell: ShellCounters, info: { epoch: number; leader: boolean; terms: number }): string {
  const out = new Exposition();
  const totals = core.resourceTotals();
  const sizes = core.sizes();
  const counters = core.counters;
  const tasks = core.taskCounts();

  // Not `_resources_total`: Prometheus keeps the `_total` suffix for counters, and this is a gauge.
  out.family("corral_master_resources_capacity", "gauge", "Scalar resources of registered agents, in all.", byResource(totals.total));
  out.family("corral_master_resources_used", "gauge", "Scalar resources in use by tasks (allocated and not merely offered).", byResource(totals.used));
  out.family("corral_master_resources_offered", "gauge", "Scalar resources in outstanding offers.", byResource(totals.offered));
  out.family(
    "corral_master_tasks",
    "gauge",
    "Known tasks (active, unreachable and remembered completed ones) by state.",
    Object.keys(tasks)
      .sort()
      .map((state) => [{ state }, tasks[state]!]),
  );
  out.family("corral_master_agents", "gauge", "Agents by status.", [
    [{ status: "active" }, sizes.agents],
    [{ status: "unreachable" }, sizes.unreachableAgents],
    [{ status: "gone" }, sizes.goneAgents],
  ]);
  const recovery = core.recoveryStatus();
  out.family("corral_master_recovery_agents_pending", "gauge", "Agents of the registry that have not re-registered since this master recovered it.", [[undefined, recovery.agentsPending]]);
  out.family("corral_master_recovery_offers_held", "gauge", "1 while offers wait for the registry's agents to re-register (after a restart or failover).", [[undefined, recovery.offersHeld ? 1 : 0]]);
  out.family("corral_master_recovery_offer_hold_seconds", "gauge", "How long offers waited for the registry's agents after the last recovery (0 until it is over).", [[undefined, (recovery.lastOfferHoldMs ?? 0) / 1000]]);
  out.family("corral_master_frameworks", "gauge", "Registered (not torn-down) frameworks.", [[undefined, sizes.frameworks]]);
  out.family("corral_master_outstanding_offers", "gauge", "Offers made and not yet answered or rescinded.", [[undefined, sizes.offers]]);
  out.family("corral_master_offers_total", "counter", "Offer events since start.", [
    [{ event: "made" }, counters.offersMade],
    [{ event: "declined" }, counters.offersDeclined],
    [{ event: "rescinded" }, counters.offersRescinded],
  ]);
  out.family("corral_master_tasks_launched_total", "counter", "Tasks sent to agents since start.", [[undefined, counters.tasksLaunched]]);
  out.family("corral_master_status_updates_total", "counter", "Task status updates received from agents since start.", [[undefined, counters.statusUpdates]]);
  out.family("corral_master_invalid_status_updates_total", "counter", "Task status updates dropped since start because their agent was not registered.", [[undefined, counters.invalidStatusUpdates]]);
  out.family("corral_master_allocation_runs_total", "counter", "Allocation runs since start.", [[undefined, counters.allocationRuns]]);
  out.family("corral_master_allocation_run_seconds", "summary", "Time spent in allocation runs.", [
    [undefined, counters.allocationRunMsTotal / 1000, "_sum"],
    [undefined, counters.allocationRuns, "_count"],
  ]);
  out.family("corral_master_allocation_agents_visited_total", "counter", "Agents the allocation runs visited since start (only agents whose offers may have changed are visited).", [[undefined, counters.allocationAgentsVisited]]);
  out.family("corral_master_invalid_calls_total", "counter", "Framework calls and launches refused as invalid since start.", [[undefined, counters.invalidCalls]]);
  out.family("corral_master_epoch", "gauge", "The leader epoch this master serves (or served last).", [[undefined, info.epoch]]);
  out.family("corral_master_elected", "gauge", "1 while this master leads (holds the lease and serves the bus), else 0.", [[undefined, info.leader ? 1 : 0]]);
  out.family("corral_master_terms_total", "counter", "Terms this master has won since start.", [[undefined, info.terms]]);
  out.family(
    "corral_master_effect_errors_total",
    "counter",
    "Effects of the core that could not be carried out (unsendable id, encode failure, closed transport), by effect type.",
    Object.keys(shell.effectErrors)
      .sort()
      .map((type) => [{ type }, shell.effectErrors[type]!]),
  );
  out.family("corral_master_tick_errors_total", "counter", "Timer ticks whose handling failed.", [[undefined, shell.tickErrors]]);
  out.family("corral_master_registry_writes_total", "counter", "Registry writes applied to the store.", [[undefined, shell.storeWrites]]);
  out.family("corral_master_registry_write_failures_total", "counter", "Failed registry write attempts (each is retried).", [[undefined, shell.storeWriteFailures]]);
  out.family("corral_master_registry_pending_keys", "gauge", "Registry keys with a write not yet applied.", [[undefined, shell.storePendingKeys]]);
  out.family("corral_master_inputs_shed_total", "counter", "Bus inputs dropped because too many were waiting to be handled (the senders retry).", [[undefined, shell.inputsShed]]);
  out.family("corral_master_offer_events_split_total", "counter", "Offers events split into several messages to fit the bus's message size.", [[undefined, shell.offerEventsSplit]]);
  out.raw(drops.toPrometheus());
  return out.toString();
}
