import { describe, expect, it } from "vitest";
import { exitCodeOf } from "../../cli/commands/run.ts";
import type { TaskStatus } from "../../sdk/wire/types.ts";

const status = (state: TaskStatus["state"], reason: TaskStatus["reason"] = "REASON_UNSPECIFIED", exitCode?: number): TaskStatus => ({
  taskId: "run-1",
  state,
  reason,
  message: "",
  source: "SOURCE_EXECUTOR",
  agentId: "agent-1",
  frameworkId: "fw-1",
  uuid: new Uint8Array(),
  timestamp: 0,
  ...(exitCode === undefined ? {} : { exitCode }),
});

describe("corral run's exit code", () => {
  it("is the task's own, else what a shell reports for a SIGKILL, else 1", () => {
    expect(exitCodeOf(status("TASK_FINISHED", "REASON_UNSPECIFIED", 0))).toBe(0);
    expect(exitCodeOf(status("TASK_FAILED", "REASON_COMMAND_EXECUTOR_FAILED", 7))).toBe(7);
    expect(exitCodeOf(status("TASK_KILLED"))).toBe(137);
    // Over its memory or disk the container is SIGKILLed: 137, as `docker run` reports an OOM kill.
    expect(exitCodeOf(status("TASK_FAILED", "REASON_CONTAINER_LIMITATION_MEMORY"))).toBe(137);
    expect(exitCodeOf(status("TASK_FAILED", "REASON_CONTAINER_LIMITATION_DISK"))).toBe(137);
    expect(exitCodeOf(status("TASK_FAILED", "REASON_CONTAINER_LAUNCH_FAILED"))).toBe(1);
    expect(exitCodeOf(status("TASK_LOST", "REASON_AGENT_REMOVED"))).toBe(1);
  });
});
