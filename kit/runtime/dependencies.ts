// A service's dependencies: a client of each as it starts, their addresses from SHOP_* as it runs.
import { channelTarget, createClient } from "../client/index.js";
import { env } from "../config.js";
import type { ClientMiddleware } from "../middleware/index.js";
import { type ServiceRegistry, serviceVariable } from "../registry.js";
import type { SecurityConfig } from "../security/security.js";
import { channelCredentials } from "../security/tls.js";
import type { AnyServiceModule } from "../service.js";
import type { StartOptions } from "./types.js";

/**
 * A client of each service `module` calls, by client name, at its address in
 * `options.dependencies`: one long-lived channel per dependency, balanced over its replicas; its
 * retry and hedging policies come from the contract.
 */
export function dependencyClients(
  module: AnyServiceModule,
  options: Pick<StartOptions, "dependencies" | "dependencyIdentities">,
  tls: SecurityConfig["tls"],
  middleware: readonly ClientMiddleware[],
): Record<string, ReturnType<typeof createClient>> {
  // Every address is checked before any channel opens, so a refusal leaves nothing to close.
  const missing = Object.keys(module.dependencies).find((name) => !options.dependencies?.[name]);
  if (missing) throw new Error(`${module.name}: no address for its dependency "${missing}"`);
  const clients: Record<string, ReturnType<typeof createClient>> = {};
  for (const [name, definition] of Object.entries(module.dependencies)) {
    clients[name] = createClient(definition as never, options.dependencies?.[name] as string, {
      middleware,
      direct: true,
      transport: channelCredentials(tls, options.dependencyIdentities?.[name]),
    });
  }
  return clients;
}

/**
 * The addresses of the services `name` calls: SHOP_<DEPENDENCY>_ADDR, else the dependency's
 * default port on 127.0.0.1.
 */
export function dependencyAddresses(registry: ServiceRegistry, name: string) {
  const service = registry.get(name);
  return Object.fromEntries(
    Object.entries(service.clients).map(([client, dependency]) => {
      const variable = serviceVariable(dependency, "ADDR");
      const address = env.string(variable, `127.0.0.1:${registry.get(dependency).port}`);
      return [client, checkedAddress(variable, address)];
    }),
  );
}

/**
 * A dependency's address as channelTarget takes it: each `host:port` with a port of 1 to 65535
 * and an IPv6 host in brackets, or a unix socket, which grpc-js reads.
 */
function checkedAddress(variable: string, address: string): string {
  if (/^unix(-abstract)?:/i.test(address)) return address;
  const endpoints = address.replace(/^(dns:(\/\/[^/]*\/)?|ipv4:|ipv6:)/i, "").split(",");
  const valid = endpoints.every((endpoint) => {
    const [, host = "", port] = /^(.+):(\d{1,5})$/.exec(endpoint.trim()) ?? [];
    const bracketed = /^\[[0-9a-f:.]+\]$/i.test(host);
    // Anything else with a colon or a slash is a scheme grpc-js cannot dial (http://…) or an
    // IPv6 address without its brackets.
    if (!bracketed && /[:/]/.test(host)) return false;
    return port !== undefined && Number(port) >= 1 && Number(port) <= 65_535;
  });
  if (!valid) {
    throw new Error(
      `${variable} must be host:port, ip:port,ip:port or dns:///name:port, got "${address}"`,
    );
  }
  try {
    channelTarget(address);
  } catch (error) {
    throw new Error(`${variable}: ${(error as Error).message}`);
  }
  return address;
}
