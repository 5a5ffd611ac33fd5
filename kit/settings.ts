// Every SHOP_* variable shopmesh reads (README's Configuration), so that a mistyped one is
// reported instead of ignored in favour of its default.

/**
 * The settings of the whole project: the kit, launchers, the seeder and the benchmark. A
 * service's own are in its module (ServiceModule.settings).
 */
export const SETTINGS: readonly string[] = [
  "SHOP_BUILD_DIR",
  "SHOP_CORS_ORIGINS",
  "SHOP_DATABASE",
  "SHOP_DATABASE_POOL_MAX",
  "SHOP_DATABASE_PREPARED_STATEMENTS",
  "SHOP_DATABASE_STATEMENT_TIMEOUT_MS",
  "SHOP_DATABASE_URL",
  "SHOP_DATA_DIR",
  "SHOP_DEPENDENCY_TIMEOUT_MS",
  "SHOP_EDGE_RATE_LIMIT",
  "SHOP_ENVOY_ADMIN_PORT",
  "SHOP_ENVOY_PORT",
  "SHOP_ENVOY_STATS_PORT",
  "SHOP_HEALTH_PORT",
  "SHOP_HOST",
  "SHOP_IMAGE_TAG",
  "SHOP_JWKS_FILE",
  "SHOP_JWT_AUDIENCE",
  "SHOP_JWT_ISSUER",
  "SHOP_JWT_SIGNING_KEY_FILE",
  "SHOP_LOG_LEVEL",
  "SHOP_MAX_CONNECTION_AGE_GRACE_MS",
  "SHOP_MAX_CONNECTION_AGE_MS",
  "SHOP_MAX_PAGES_IN_FLIGHT",
  "SHOP_MAX_STREAMS_PER_CALLER",
  "SHOP_MESH_REPLICAS",
  "SHOP_METRICS",
  "SHOP_METRICS_PORT",
  "SHOP_PAGE_TOKEN_SECRET",
  "SHOP_PAGE_TOKEN_SECRET_FILE",
  "SHOP_PAGE_WRITE_TIMEOUT_MS",
  "SHOP_PORT",
  "SHOP_POSTGRES_BIN",
  "SHOP_POSTGRES_PORT",
  "SHOP_PROFILE",
  "SHOP_PROMETHEUS_PORT",
  "SHOP_PROMETHEUS_SCRAPE_INTERVAL",
  "SHOP_SEED",
  "SHOP_SERVICE",
  "SHOP_SHUTDOWN_ANNOUNCE_MS",
  "SHOP_SHUTDOWN_GRACE_MS",
  "SHOP_SQLITE_DRIVER",
  "SHOP_SQLITE_SYNC",
  "SHOP_TLS_CA_FILE",
  "SHOP_TLS_CERT_FILE",
  "SHOP_TLS_KEY_FILE",
];

/** The settings about one service, `SHOP_<NAME>_<SETTING>` (kit/config.ts serviceVariable). */
export const SERVICE_SETTINGS: readonly string[] = [
  "ADDR",
  "DATABASE_URL",
  "METRICS_PORTS",
  "PORT",
  "PORTS",
];

/** Edits (insert, delete, replace, swap two neighbours) that turn `a` into `b`. */
function distance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = rows[i] as number[];
      const above = rows[i - 1] as number[];
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(
        (above[j] as number) + 1,
        (row[j - 1] as number) + 1,
        (above[j - 1] as number) + cost,
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(row[j] as number, (rows[i - 2]?.[j - 2] as number) + 1);
      }
    }
  }
  return rows[a.length]?.[b.length] as number;
}

export interface UnknownSetting {
  name: string;
  /** The known setting it is closest to, within two edits. */
  closest?: string;
}

/**
 * The SHOP_* variables of `environment` that name no setting, given the registered services'
 * names and their own settings: `SHOP_PORTT`, or `SHOP_PAYMENT_ADDR` in a mesh without a
 * payment service.
 */
export function unknownSettings(
  environment: NodeJS.ProcessEnv,
  services: readonly string[],
  servicesOwn: readonly string[] = [],
): UnknownSetting[] {
  const known = new Set([
    ...SETTINGS,
    ...servicesOwn,
    ...services.flatMap((service) =>
      SERVICE_SETTINGS.map((setting) => `SHOP_${service.toUpperCase()}_${setting}`),
    ),
  ]);
  return Object.keys(environment)
    .filter((name) => name.startsWith("SHOP_") && !known.has(name))
    .sort()
    .map((name) => {
      const [closest] = [...known]
        .map((candidate) => ({ candidate, edits: distance(name, candidate) }))
        .filter(({ edits }) => edits <= 2)
        .sort((a, b) => a.edits - b.edits || a.candidate.localeCompare(b.candidate));
      return closest ? { name, closest: closest.candidate } : { name };
    });
}

/** One line about an unknown setting, for a log or a launcher's console. */
export const unknownSettingMessage = ({ name, closest }: UnknownSetting) =>
  `${name} is not a setting, and is ignored${closest ? `: did you mean ${closest}?` : ""}`;
