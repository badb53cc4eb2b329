import { describe, expect, it } from "vitest";
import { ManualClock, type Timers } from "../../sdk/clock.ts";
import { InstantContainerizer } from "../../agent/containerizer/instant.ts";
import type { ContainerSpec } from "../../agent/containerizer/types.ts";

/** Timers driven by hand, as the simulator drives them. */
class HandTimers implements Timers {
  private pending: Array<{ at: number; fn: () => void; cancelled: boolean }> = [];
  constructor(private readonly clock: ManualClock) {}
  set(delayMs: number, callback: () => void) {
    const entry = { at: this.clock.now() + delayMs, fn: callback, cancelled: false };
    this.pending.push(entry);
    return { cancel: () => void (entry.cancelled = true) };
  }
  advance(ms: number) {
    this.clock.advance(ms);
    for (const e of this.pending.filter((p) => !p.cancelled && p.at <= this.clock.now())) {
      e.cancelled = true;
      e.fn();
    }
  }
}

const spec = (id: string): ContainerSpec => ({
  containerId: id,
  taskId: id,
  frameworkId: "fw",
  command: { shell: true, value: "ignored" },
  env: {},
  sandboxDir: "/nonexistent",
  resources: { cpus: 1, memMb: 10, diskMb: 0, ports: [] },
});

describe("InstantContainerizer", () => {
  it("runs a task for its duration on the given timers, then reports its exit code", async () => {
    const clock = new ManualClock(0);
    const timers = new HandTimers(clock);
    const containerizer = new InstantContainerizer({ clock, timers, durationMs: () => 5000, exitCode: (s) => (s.taskId === "bad" ? 2 : 0) });
    await containerizer.launch(spec("good"));
    await containerizer.launch(spec("bad"));
    expect(containerizer.containers().sort()).toEqual(["bad", "good"]);
    timers.advance(4999);
    expect(containerizer.containers()).toHaveLength(2);
    timers.advance(1);
    expect(await containerizer.wait("good")).toMatchObject({ exitCode: 0, killed: false });
    expect(await containerizer.wait("bad")).toMatchObject({ exitCode: 2, message: "Command exited with status 2" });
    expect(containerizer.containers()).toEqual([]);
  });

  it("kills, refuses reused ids and closes", async () => {
    const containerizer = new InstantContainerizer();
    await containerizer.launch(spec("a"));
    await expect(containerizer.launch(spec("a"))).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_EXISTS" });
    expect(await containerizer.kill("a")).toMatchObject({ killed: true, signal: "SIGKILL" });
    expect(await containerizer.kill("a")).toMatchObject({ killed: true }); // recorded
    await expect(containerizer.wait("nope")).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_NOT_FOUND" });
    await containerizer.launch(spec("b"));
    await containerizer.destroyAll();
    expect(containerizer.containers()).toEqual([]);
    await expect(containerizer.launch(spec("c"))).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINERIZER_CLOSED" });
  });

  it("remembers the terminations of the last maxRememberedTerminations ended containers, and checks the option", async () => {
    const containerizer = new InstantContainerizer({ maxRememberedTerminations: 2 });
    for (const id of ["a", "b", "c"]) {
      await containerizer.launch(spec(id));
      await containerizer.kill(id);
    }
    await expect(containerizer.wait("a")).rejects.toMatchObject({ code: "CORRAL_ERR_CONTAINER_NOT_FOUND" });
    expect(await containerizer.wait("b")).toMatchObject({ killed: true });
    expect(await containerizer.wait("c")).toMatchObject({ killed: true });
    expect(() => new InstantContainerizer({ maxRememberedTerminations: -1 })).toThrow("maxRememberedTerminations must be a finite number >= 0, got -1");
  });
});
