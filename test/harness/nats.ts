/**
 * The bus of the integration tests: a real nats-server per test file (see `cli/nats-server.ts`,
 * which `corral up` uses too). No test mocks NATS.
 *
 * @module
 */
import { afterAll, beforeAll } from "vitest";
import { startNats, type NatsServer, type StartNatsOptions } from "../../cli/nats-server.ts";
import { connectNats, type NatsTransport } from "../../sdk/nats-transport.ts";
import type { Defer } from "./cleanups.ts";

export { findNatsServer, freePort, startNats, type NatsServer, type StartNatsOptions } from "../../cli/nats-server.ts";

/** The server of {@link useNats}, available once `beforeAll` ran. */
export interface NatsFixture {
  readonly url: string;
  readonly port: number;
  readonly server: NatsServer;
}

/**
 * Registers `beforeAll`/`afterAll` hooks that run one nats-server for the current test file.
 * Read the fields inside tests or hooks, not at module load.
 */
export function useNats(options: StartNatsOptions = {}): NatsFixture {
  let server: NatsServer | undefined;
  const get = (): NatsServer => {
    if (!server) throw new Error("useNats(): the server is only available inside tests and hooks");
    return server;
  };
  beforeAll(async () => {
    server = await startNats(options);
  });
  afterAll(async () => {
    await server?.stop();
    server = undefined;
  });
  return {
    get url() {
      return get().url;
    },
    get port() {
      return get().port;
    },
    get server() {
      return get();
    },
  };
}

/** A connection to the fixture's server named `name` (as servers list it), closed by `defer`. */
export async function connectBus(nats: NatsFixture, name: string, defer: Defer): Promise<NatsTransport> {
  const transport = await connectNats({ servers: nats.url, name });
  defer(() => transport.close());
  return transport;
}
