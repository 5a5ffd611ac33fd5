import { serviceVariable } from "./config.js";
import { type ServiceDefinition, serviceNameOf } from "./contract.js";
import type { Migration } from "./db/index.js";
import { type AnyServiceModule, accessRules } from "./service.js";

/** One line of the registry: a service module and where it runs. */
export interface RegistryEntry<M extends AnyServiceModule = AnyServiceModule> {
  /** What runs: the module services/<name>/service.ts exports. */
  readonly module: M;
  /** Where it listens by default; replica i of `npm run mesh` listens on port + 10 × (i − 1). */
  readonly port: number;
  /**
   * Where it serves Prometheus metrics (HTTP GET /metrics) by default; its port + 1000 when left
   * out. Replica i of `npm run mesh` serves them on metricsPort + 10 × (i − 1), like its gRPC port.
   */
  readonly metricsPort?: number;
  /**
   * Each proto service's exposure, by its key in the module's `serves`: "public" (the default)
   * is routed by Envoy at the edge, listed by the edge's reflection and has REST paths;
   * "internal" is called only inside the mesh, e.g. `{ InventoryService: "internal" }`.
   */
  readonly exposure?: Readonly<Record<string, Exposure>>;
}

/** Who may reach a proto service: anyone through the edge, or only services inside the mesh. */
export type Exposure = "public" | "internal";

/** A registered service, with everything the launchers, Envoy and deployments derive from it. */
export interface RegisteredService<N extends string = string> {
  readonly name: N;
  readonly module: AnyServiceModule;
  readonly port: number;
  /** Where replica 1 serves its metrics: the entry's, or port + METRICS_PORT_OFFSET. */
  readonly metricsPort: number;
  /** Full names of the proto services it serves, e.g. ["shop.user.v1.UserService"]. */
  readonly protoServices: readonly string[];
  /** The proto services Envoy routes at the edge; a service with none gets no cluster there. */
  readonly publicServices: readonly string[];
  /** The proto services only the mesh calls: never routed, listed or transcoded at the edge. */
  readonly internalServices: readonly string[];
  /** The registered services it calls, by the name of its client for each. */
  readonly clients: Readonly<Record<string, N>>;
  /** The registered services it calls, each once. */
  readonly dependencies: readonly N[];
  readonly migrations: readonly Migration[];
}

const NAME = /^[a-z][a-z0-9]*$/;

/** How far above its gRPC port a service serves its metrics, unless its entry says otherwise. */
export const METRICS_PORT_OFFSET = 1000;

/**
 * The metrics port of a process of `service` serving gRPC on `grpcPort`: the same distance above
 * it as the registry's metricsPort is above its port, so every replica has its own. Port 0 (a
 * free port) gives 0.
 */
export function metricsPortFor(
  service: Pick<RegisteredService, "name" | "port" | "metricsPort">,
  grpcPort: number,
): number {
  if (grpcPort === 0) return 0;
  const port = grpcPort + (service.metricsPort - service.port);
  if (port < 1 || port > 65_535) {
    throw new Error(
      `${service.name}: no metrics port follows from port ${grpcPort}; set SHOP_METRICS_PORT`,
    );
  }
  return port;
}

export { serviceVariable };

/** The one list of services, in start order: every service after the services it calls. */
export class ServiceRegistry<N extends string = string> {
  readonly services: readonly RegisteredService<N>[];

  constructor(entries: readonly RegistryEntry[]) {
    const owners = new Map<string, N>();
    for (const { module } of entries) {
      if (!NAME.test(module.name)) {
        throw new Error(`service name "${module.name}" must be lower-case letters and digits`);
      }
      for (const definition of Object.values(module.serves)) {
        owners.set(serviceNameOf(definition as never), module.name as N);
      }
    }
    const resolved = entries.map((entry): RegisteredService<N> => {
      const { module } = entry;
      const clients: Record<string, N> = {};
      for (const [client, definition] of Object.entries(module.dependencies)) {
        const protoService = serviceNameOf(definition as never);
        const owner = owners.get(protoService);
        if (!owner) throw new Error(`${module.name} calls ${protoService}, which nothing serves`);
        clients[client] = owner;
      }
      const served = Object.entries(module.serves).map(([key, definition]) => ({
        key,
        name: serviceNameOf(definition as never),
      }));
      for (const key of Object.keys(entry.exposure ?? {})) {
        if (!served.some((proto) => proto.key === key)) {
          throw new Error(`${module.name}: exposure names "${key}", which it does not serve`);
        }
      }
      const internal = (key: string) => entry.exposure?.[key] === "internal";
      const rules = accessRules(module);
      for (const proto of served.filter(({ key }) => !internal(key))) {
        const definition = (module.serves as Record<string, ServiceDefinition>)[proto.key] ?? {};
        const meshOnly = Object.values(definition).find(
          (method) => rules.get(method.path)?.kind === "internal",
        );
        if (meshOnly) {
          throw new Error(
            `${module.name}: ${meshOnly.path} is for mesh callers only (internal), but ${proto.key} is public at the edge; give its line in services/registry.ts exposure: { ${proto.key}: "internal" }`,
          );
        }
      }
      return {
        name: module.name as N,
        module,
        port: entry.port,
        metricsPort: entry.metricsPort ?? entry.port + METRICS_PORT_OFFSET,
        protoServices: served.map((proto) => proto.name),
        publicServices: served.filter((proto) => !internal(proto.key)).map((proto) => proto.name),
        internalServices: served.filter((proto) => internal(proto.key)).map((proto) => proto.name),
        clients,
        dependencies: [...new Set(Object.values(clients))],
        migrations: module.migrations,
      };
    });
    for (const [i, service] of resolved.entries()) {
      const twin = resolved.findIndex(
        (other) =>
          other.name === service.name ||
          [other.port, other.metricsPort].some(
            (port) => port === service.port || port === service.metricsPort,
          ),
      );
      if (twin !== i || service.port === service.metricsPort) {
        throw new Error(`${service.name}: its name or one of its ports is registered twice`);
      }
    }
    this.services = startOrder(resolved);
  }

  /** The registered names, in start order. */
  get names(): N[] {
    return this.services.map((service) => service.name);
  }

  get(name: string): RegisteredService<N> {
    const found = this.services.find((service) => service.name === name);
    if (!found) throw new Error(`no service "${name}"; one of ${this.names.join(", ")}`);
    return found;
  }

  /** The services' own SHOP_* settings (ServiceModule.settings). */
  get settings(): string[] {
    return [...new Set(this.services.flatMap((service) => service.module.settings ?? []))];
  }

  /** Every public proto service of the mesh: what the edge routes. */
  get publicServices(): string[] {
    return this.services.flatMap((service) => service.publicServices);
  }

  /** Every internal proto service of the mesh. */
  get internalServices(): string[] {
    return this.services.flatMap((service) => service.internalServices);
  }

  /** The service that serves a proto service, e.g. "shop.user.v1.UserService" → user. */
  owner(protoService: string): RegisteredService<N> | undefined {
    return this.services.find((service) => service.protoServices.includes(protoService));
  }
}

/** Dependencies first; refuses a cycle, which no start order could satisfy. */
function startOrder<N extends string>(
  services: readonly RegisteredService<N>[],
): RegisteredService<N>[] {
  const ordered: RegisteredService<N>[] = [];
  const visiting = new Set<string>();
  const visit = (service: RegisteredService<N>) => {
    if (ordered.includes(service)) return;
    if (visiting.has(service.name)) throw new Error(`${service.name} depends on itself`);
    visiting.add(service.name);
    for (const name of service.dependencies) {
      visit(services.find((candidate) => candidate.name === name) as RegisteredService<N>);
    }
    visiting.delete(service.name);
    ordered.push(service);
  };
  for (const service of services) visit(service);
  return ordered;
}

type NameOf<E extends readonly RegistryEntry[]> = E[number]["module"]["name"];

/** The registry of `entries`, typed by their names. */
export function defineRegistry<const E extends readonly RegistryEntry[]>(
  entries: E,
): ServiceRegistry<NameOf<E>> {
  return new ServiceRegistry<NameOf<E>>(entries);
}
