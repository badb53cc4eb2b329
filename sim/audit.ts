/**
 * The audit behind the fault-injection invariant "every acknowledged status update reached its
 * framework": the frameworks' update callbacks report what they were given, the agents'
 * status-update managers report what an acknowledgement retired, and {@link StatusDeliveryAudit.problems}
 * names every retired update its framework was never given.
 *
 * @module
 */

import type { TaskStatus } from "../sdk/scheduler.ts";

/** A status update an acknowledgement retired on an agent (uuid in hex). */
export interface RetiredUpdate {
  agent: string;
  frameworkId: string;
  taskId: string;
  uuid: string;
}

/** See the module comment. Memory: one key per update delivered with a uuid and not yet retired. */
export class StatusDeliveryAudit {
  /** `frameworkId\0taskId\0uuid` of updates a framework's callback was given. */
  private readonly delivered = new Set<string>();
  /** Retired since the last {@link problems}. */
  private unchecked: RetiredUpdate[] = [];

  /** A framework's update callback was given `status` (updates without a uuid need no acknowledgement). */
  deliveredTo(frameworkId: string, status: TaskStatus): void {
    if (status.uuid.length === 0) return;
    this.delivered.add(key(frameworkId, status.taskId, Buffer.from(status.uuid).toString("hex")));
  }

  /** An agent's manager retired an update on an acknowledgement. */
  retired(update: RetiredUpdate): void {
    this.unchecked.push(update);
  }

  /**
   * The updates retired since the last call that their framework was never given, except for
   * frameworks `excused` (torn down: the master acknowledges for a framework that is gone, so that
   * agents stop re-sending). Each retired update is checked once.
   */
  problems(excused: (frameworkId: string) => boolean): string[] {
    const problems: string[] = [];
    for (const u of this.unchecked) {
      const k = key(u.frameworkId, u.taskId, u.uuid);
      // An update is retired once: its key is not needed after this.
      if (this.delivered.delete(k) || excused(u.frameworkId)) continue;
      problems.push(`agent ${u.agent}: status update ${u.uuid} of task ${u.taskId} was acknowledged, but framework ${u.frameworkId} was never given it`);
    }
    this.unchecked = [];
    return problems;
  }
}

function key(frameworkId: string, taskId: string, uuid: string): string {
  return `${frameworkId}\0${taskId}\0${uuid}`;
}
