import { describe, expect, it } from "vitest";
import { splitTaskKey, taskKey } from "../../sdk/task-key.ts";

describe("taskKey", () => {
  it("tells the same task id of two frameworks apart", () => {
    expect(taskKey("etl", "j1.0.0")).not.toBe(taskKey("slowpoke", "j1.0.0"));
    expect(taskKey("etl", "j1.0.0")).toBe(taskKey("etl", "j1.0.0"));
  });

  it("splits back into its framework and task id, also when the task id holds a slash", () => {
    for (const [frameworkId, taskId] of [
      ["etl", "j1.0.0"],
      ["fw-1", "a/b"],
      ["fw-1", ""],
    ] as const) {
      expect(splitTaskKey(taskKey(frameworkId, taskId))).toEqual({ frameworkId, taskId });
    }
  });
});
