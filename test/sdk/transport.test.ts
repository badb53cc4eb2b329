import { pino } from "pino";
import { describe, expect, it } from "vitest";
import {
  TransportError,
  deliverSafely,
  isTransportError,
  silentLogger,
  type Logger,
} from "../../sdk/transport.ts";
import { MemoryLogger } from "./fixtures.ts";

describe("transport helpers", () => {
  const msg = { subject: "s", data: new Uint8Array([1]) };

  it("deliverSafely passes messages through and contains a throwing handler", () => {
    const log = new MemoryLogger();
    const seen: number[] = [];
    expect(deliverSafely((m) => void seen.push(m.data[0]!), msg, log)).toBe(true);
    expect(
      deliverSafely(
        () => {
          throw new Error("sync");
        },
        msg,
        log,
      ),
    ).toBe(false);
    expect(seen).toEqual([1]);
    expect(log.at("error")).toHaveLength(1);
    expect(log.at("error")[0]!.obj).toMatchObject({ subject: "s" });
  });

  it("deliverSafely logs a rejected promise instead of leaving it unhandled", async () => {
    const log = new MemoryLogger();
    let fail!: (err: Error) => void;
    const pending = new Promise<void>((_, reject) => (fail = reject));
    expect(deliverSafely(() => pending, msg, log)).toBe(true);
    fail(new Error("later"));
    await pending.catch(() => {});
    expect((log.at("error")[0]!.obj as { err: Error }).err.message).toBe("later");
  });

  it("TransportError carries a stable code", () => {
    const err = new TransportError("CORRAL_ERR_NO_RESPONDERS", "nobody", { subject: "x" });
    expect(isTransportError(err)).toBe(true);
    expect(isTransportError(err, "CORRAL_ERR_NO_RESPONDERS")).toBe(true);
    expect(isTransportError(err, "CORRAL_ERR_REQUEST_TIMEOUT")).toBe(false);
    expect(isTransportError(new Error("x"))).toBe(false);
    expect(err.subject).toBe("x");
  });

  it("accepts a pino logger and the silent logger as Logger", () => {
    const loggers: Logger[] = [pino({ enabled: false }), silentLogger];
    for (const l of loggers) expect(() => l.warn({ a: 1 }, "x")).not.toThrow();
  });
});
