import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Integration tests start real nats-servers and processes; two cores are all CI has.
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
