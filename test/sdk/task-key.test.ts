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

describe("the id rule, as framework authors import it", () => {
  it("is exported by the SDK's entry point, so a task id can be checked before launching it", async () => {
    const sdk = await import("../../sdk/index.ts");
    expect(sdk.pathIdProblem("web.1")).toBeUndefined();
    expect(sdk.pathIdProblem("web/1")).toBe("use only letters, digits, '_', '.', '@', '+' or '-'");
    expect(sdk.pathIdProblem("x".repeat(sdk.MAX_PATH_ID_LENGTH + 1))).toMatch(/at most 200 characters/);
  });
});
