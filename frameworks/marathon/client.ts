/**
 * A small client of Marathon's v2 API, for the `corral app ...` commands and for scripts:
 * `deploy` (create or update), `list`, `show`, `scale`, `restart`, `remove`, `tasks`,
 * `deployments`, `queue`. Every failure is a {@link MarathonApiError} carrying the HTTP status
 * and Marathon's error body, so callers can print the field paths of a 422.
 *
 * @module
 */

/** Marathon answered with an error status (or could not be reached: status 0, with fetch's error as `cause`). */
export class MarathonApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "MarathonApiError";
  }

  /** The error details (`path: errors`) of a 4xx body, one line each. */
  detailLines(): string[] {
    const details = (this.body as { details?: Array<{ path?: unknown; errors?: unknown }> } | undefined)?.details;
    if (!Array.isArray(details)) return [];
    return details.map((d) => `${String(d.path)}: ${Array.isArray(d.errors) ? d.errors.join("; ") : String(d.errors)}`);
  }
}

/** What a write answers. */
export interface DeploymentRef {
  deploymentId: string;
  version: string;
}

export interface MarathonClientOptions {
  /** Per-request timeout. @default 10000 */
  timeoutMs?: number;
}

/** Options of writes. */
export interface WriteOptions {
  /** Override a running deployment that holds the app. @default false */
  force?: boolean;
}

type Json = Record<string, unknown>;

export class MarathonClient {
  private readonly base: string;

  /** The Marathon this client talks to, without a trailing slash. */
  get baseUrl(): string {
    return this.base;
  }

  /** @param baseUrl e.g. `http://127.0.0.1:8080` */
  constructor(
    baseUrl: string,
    private readonly options: MarathonClientOptions = {},
  ) {
    this.base = baseUrl.replace(/\/+$/, "");
  }

  /**
   * Creates the app, or updates it when it exists (a full replacement, as `PUT` with
   * `partialUpdate=false`: fields left out return to their defaults).
   */
  async deploy(app: Json, options: WriteOptions = {}): Promise<DeploymentRef & { created: boolean }> {
    if (typeof app.id !== "string" || app.id === "") throw new MarathonApiError(422, undefined, "the app definition needs an id");
    const id = app.id.startsWith("/") ? app.id : `/${app.id}`;
    const exists = await this.request("GET", `/v2/apps${encodePath(id)}`).then(
      () => true,
      (err: unknown) => {
        if (err instanceof MarathonApiError && err.status === 404) return false;
        throw err;
      },
    );
    if (!exists) {
      const answer = await this.request<Json>("POST", `/v2/apps${query(options)}`, app);
      const deployments = answer.deployments as Array<{ id: string }> | undefined;
      return { deploymentId: deployments?.[0]?.id ?? "", version: String(answer.version ?? ""), created: true };
    }
    const answer = await this.request<DeploymentRef>("PUT", `/v2/apps${encodePath(id)}${query({ ...options, partialUpdate: false })}`, app);
    return { ...answer, created: false };
  }

  async list(filters: { id?: string; label?: string; cmd?: string } = {}): Promise<Json[]> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v !== undefined) params.set(k, v);
    const suffix = params.size > 0 ? `?${params}` : "";
    return (await this.request<{ apps: Json[] }>("GET", `/v2/apps${suffix}`)).apps;
  }

  async show(appId: string): Promise<Json> {
    return (await this.request<{ app: Json }>("GET", `/v2/apps${encodePath(appId)}`)).app;
  }

  /**
   * Changes an existing app's instance count; a missing app is a 404. (Marathon's `PUT` creates an
   * app it does not know, so `{instances}` alone would be refused for a missing `cmd` instead.)
   */
  async scale(appId: string, instances: number, options: WriteOptions = {}): Promise<DeploymentRef> {
    await this.show(appId);
    return this.request("PUT", `/v2/apps${encodePath(appId)}${query(options)}`, { instances });
  }

  async restart(appId: string, options: WriteOptions = {}): Promise<DeploymentRef> {
    return this.request("POST", `/v2/apps${encodePath(appId)}/restart${query(options)}`);
  }

  /** Deletes the app (killing its tasks). Marathon forces this by default. */
  async remove(appId: string): Promise<DeploymentRef> {
    return this.request("DELETE", `/v2/apps${encodePath(appId)}`);
  }

  async tasks(appId?: string): Promise<Json[]> {
    const path = appId === undefined ? "/v2/tasks" : `/v2/apps${encodePath(appId)}/tasks`;
    return (await this.request<{ tasks: Json[] }>("GET", path)).tasks;
  }

  async deployments(): Promise<Json[]> {
    return this.request("GET", "/v2/deployments");
  }

  /** Creates or replaces a group (its apps and subgroups), as `PUT /v2/groups/{id}`. */
  async deployGroup(group: Json, options: WriteOptions = {}): Promise<DeploymentRef> {
    if (typeof group.id !== "string" || group.id === "") throw new MarathonApiError(422, undefined, "the group definition needs an id");
    return this.request<DeploymentRef>("PUT", `/v2/groups${encodePath(group.id)}${options.force ? "?force=true" : ""}`, group);
  }

  /** Whether a deployment is still running (it disappears from `/v2/deployments` when done). */
  async deploymentRunning(deploymentId: string): Promise<boolean> {
    return (await this.deployments()).some((d) => d.id === deploymentId);
  }

  async queue(): Promise<Json[]> {
    return (await this.request<{ queue: Json[] }>("GET", "/v2/queue")).queue;
  }

  private async request<T = Json>(method: string, path: string, body?: unknown): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${this.base}${path}`, {
        method,
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 10_000),
        ...(body !== undefined ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}),
      });
    } catch (err) {
      // fetch says only "fetch failed"; the reason (ECONNREFUSED, a timeout...) is in its cause.
      const why = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
      throw new MarathonApiError(0, undefined, `cannot reach Marathon at ${this.base}: ${why}`, { cause: err });
    }
    const text = await response.text();
    let parsed: unknown = undefined;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      parsed = text;
    }
    if (!response.ok) {
      const message = (parsed as { message?: unknown } | undefined)?.message;
      throw new MarathonApiError(response.status, parsed, `${method} ${path}: ${response.status} ${typeof message === "string" ? message : response.statusText}`);
    }
    return parsed as T;
  }
}

function encodePath(appId: string): string {
  const id = appId.startsWith("/") ? appId : `/${appId}`;
  return id
    .split("/")
    .map((s) => encodeURIComponent(s))
    .join("/");
}

function query(options: { force?: boolean; partialUpdate?: boolean }): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(options)) if (v !== undefined) params.set(k, String(v));
  return params.size > 0 ? `?${params}` : "";
}
