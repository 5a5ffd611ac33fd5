import type { Client } from "./client/index.js";
import type { CallContext } from "./context.js";
import type { RequestOf, ResponseOf, ServiceDefinition } from "./contract.js";
import type { Knex, Migration } from "./db/index.js";
import type { ClientMiddleware, ServerMiddleware } from "./middleware/index.js";
import type { Logger } from "./observability/logger.js";
import type { Metrics } from "./observability/metrics.js";
import type { AccessRule } from "./security/auth.js";

/**
 * A proto service's handlers: plain async functions from request message to response message, or
 * async generators for server-streaming methods. They throw ServiceError for anything but success.
 */
export type Handlers<S extends ServiceDefinition> = {
  [K in keyof S]: S[K] extends { responseStream: true }
    ? (request: RequestOf<S[K]>, ctx: CallContext) => AsyncIterable<ResponseOf<S[K]>>
    : (request: RequestOf<S[K]>, ctx: CallContext) => Promise<ResponseOf<S[K]>>;
};

/** A generated definition and the handlers that serve it. */
export interface ServiceImplementation<S extends ServiceDefinition = ServiceDefinition> {
  definition: S;
  handlers: Handlers<S>;
}

/** Who may call each rpc of a proto service (kit/security/auth.ts: open, signedIn, adminOnly, internal). */
export type Access<S extends ServiceDefinition> = { readonly [K in keyof S]: AccessRule };

/** The same access rule for every rpc of a proto service, e.g. `everyRpc(XServiceService, signedIn)`. */
export function everyRpc<S extends ServiceDefinition>(definition: S, rule: AccessRule): Access<S> {
  return Object.fromEntries(Object.keys(definition).map((name) => [name, rule])) as Access<S>;
}

/** Generated definitions by a name of the module's choosing. */
export type Definitions = Record<string, ServiceDefinition>;

/**
 * What a service's implement() gets: its database, its logger, a client per dependency, and its
 * metrics, where it registers its business metrics (the kit counts rpcs and queries itself).
 */
export interface ServiceEnvironment<D extends Definitions> {
  db: Knex;
  /**
   * The same database for reads outside a transaction, which never wait there for a write
   * (kit/db/index.ts openReads); `db` itself where that needs no connection of its own.
   */
  reads: Knex;
  logger: Logger;
  clients: { [K in keyof D]: Client<D[K]> };
  /** The deadline of a call to a dependency when the served call's is later or absent. */
  dependencyTimeoutMs: number;
  metrics: Metrics;
}

/** Work a service repeats in the background (a sweep, a reconciler), never two runs at once. */
export interface BackgroundTask {
  /** Its name in log lines and in the `shop_background_*` metrics' `task` label. */
  readonly name: string;
  readonly everyMs: number;
  /** One run. A failed run is logged and counted, and the next goes on as usual. */
  run(): Promise<void>;
}

/** What a service's implement() returns: the handlers of each proto service it serves. */
export interface Implementation<S extends Definitions> {
  handlers: { [K in keyof S]: Handlers<S[K]> };
  /** Work it repeats while it runs; the kit starts, logs, counts and stops each task. */
  background?: readonly BackgroundTask[];
  /** Stops background work; runs after the server has drained, before the database closes. */
  close?(): Promise<void>;
}

/**
 * What a service folder exports (services/<name>/service.ts): what it serves, what it calls, its
 * migrations, and how to build its handlers. Where it runs is the registry's business.
 */
export interface ServiceModule<
  N extends string = string,
  S extends Definitions = Definitions,
  D extends Definitions = Definitions,
> {
  /** Short name, e.g. "user": the registry key, the database file, the log lines, SHOP_USER_*. */
  readonly name: N;
  /** The proto services it serves, by a name for its handlers. */
  readonly serves: S;
  /** The proto services it calls, by the name of their client, e.g. { users: UserServiceService }. */
  readonly dependencies: D;
  /** Its database migrations, oldest first; never edit one that has shipped. */
  readonly migrations: readonly Migration[];
  /**
   * Who may call each rpc it serves. Every rpc needs a rule: one without does not compile, and
   * the auth middleware refuses to serve it. Envoy's token checks follow the same rules.
   */
  readonly access: { readonly [K in keyof S]: Access<S[K]> };
  /**
   * Its own SHOP_* variables (README "Configuration"), beside the kit's: any other is reported
   * as a mistyped setting when it starts.
   */
  readonly settings?: readonly string[];
  /**
   * Middleware of its own, after the kit's: around every call it serves, and every call it makes
   * to a dependency.
   */
  readonly middleware?: {
    readonly served?: readonly ServerMiddleware[];
    readonly calls?: readonly ClientMiddleware[];
  };
  implement(env: ServiceEnvironment<D>): Implementation<S>;
}

// biome-ignore lint/suspicious/noExplicitAny: a module of any service, as the registry holds them.
export type AnyServiceModule = ServiceModule<string, any, any>;

/** Declares a service module, keeping its name's literal type for the registry. */
export function defineService<
  const N extends string,
  S extends Definitions,
  D extends Definitions = Record<never, never>,
>(module: ServiceModule<N, S, D>): ServiceModule<N, S, D> {
  return module;
}

/** Each rpc's access rule, by its path ("/shop.user.v1.UserService/GetUser"). */
export function accessRules(module: AnyServiceModule): Map<string, AccessRule> {
  const rules = new Map<string, AccessRule>();
  for (const [key, definition] of Object.entries(module.serves as Definitions)) {
    const access = (module.access as Record<string, Record<string, AccessRule>>)[key] ?? {};
    for (const [name, method] of Object.entries(definition)) {
      const rule = access[name];
      if (rule) rules.set(method.path, rule);
    }
  }
  return rules;
}
