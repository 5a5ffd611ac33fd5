# One image for every shopmesh service; SHOP_SERVICE picks the one a container runs.
#
#   docker build -t shopmesh .
#   docker run --rm -e SHOP_SERVICE=user -p 127.0.0.1:50051:50051 -v shop-users:/data shopmesh
#
# deploy/compose.yaml runs the whole mesh from it: see deploy/README.md. The same image runs the
# one-shot helpers: `node --import tsx scripts/migrate.ts` (migrate SHOP_SERVICE's database),
# `scripts/seed.ts` (demo data) and `scripts/probe.ts` (the health check).

FROM node:20-bookworm-slim AS deps
WORKDIR /app
# The SQLite drivers' native addons (better-sqlite3, and sqlite3 for SHOP_SQLITE_DRIVER=sqlite3)
# install a prebuilt binary when they can download one, and build from source otherwise, which
# needs a compiler and Python. PostgreSQL (SHOP_DATABASE_URL) needs nothing native.
RUN apt-get update \
  && apt-get install -y --no-install-recommends g++ make python3 \
  && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# tsx is a runtime dependency, not a dev one: the services run their TypeScript as is. So
# --omit=dev keeps everything a service needs and drops the codegen, lint and test tools.
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production \
  SHOP_HOST=0.0.0.0 \
  SHOP_DATA_DIR=/data
COPY --from=deps /app/node_modules node_modules
COPY package.json tsconfig.json ./
# What the services import at run time, and nothing else: the descriptor set feeds reflection.
COPY kit kit
COPY services services
COPY gen/ts gen/ts
COPY gen/descriptor gen/descriptor
COPY scripts/migrate.ts scripts/seed.ts scripts/probe.ts scripts/
COPY scripts/lib scripts/lib
# A new named volume takes the owner of its mount point from the image.
RUN mkdir -p /data && chown node:node /data
VOLUME /data
USER node
# Each service listens on its registry port (services/registry.ts) unless SHOP_PORT says otherwise.
# exec: node is PID 1 and gets SIGTERM itself, for a graceful shutdown.
CMD ["sh", "-c", "exec node --import tsx services/main.ts \"${SHOP_SERVICE:?set SHOP_SERVICE to a service of services/registry.ts}\""]
