# One image for every shopmesh service; SHOP_SERVICE picks the one a container runs.
#
#   docker build -t shopmesh .
#   npm run certs -- --production --out secrets    # a CA, the identities, a JWKS, a page-token key
#   docker run --rm -p 127.0.0.1:50051:50051 -v shop-users:/data \
#     $(for f in jwks.json page-token.secret ca.crt user.crt user.key; do \
#       printf -- '-v %s:/secrets/%s:ro ' "$PWD/secrets/$f" "$f"; done) \
#     -e SHOP_SERVICE=user -e SHOP_PROFILE=production -e SHOP_JWKS_FILE=/secrets/jwks.json \
#     -e SHOP_JWT_ISSUER=https://shopmesh.dev/issuer -e SHOP_JWT_AUDIENCE=shopmesh \
#     -e SHOP_PAGE_TOKEN_SECRET_FILE=/secrets/page-token.secret -e SHOP_TLS_CA_FILE=/secrets/ca.crt \
#     -e SHOP_TLS_CERT_FILE=/secrets/user.crt -e SHOP_TLS_KEY_FILE=/secrets/user.key shopmesh
#
# The files are mounted one by one: their folder only its owner may enter, and the container
# runs as uid 1000. A container binds 0.0.0.0, where plaintext is refused: it serves mutual TLS
# with a mesh identity, and checks tokens against a JWKS. deploy/compose.yaml mounts all of it
# for each service.
#
# It runs JavaScript compiled at build time on Node.js 24, the LTS line the project supports
# (engines in package.json, CI). deploy/compose.yaml and deploy/k8s run it: see deploy/README.md.
# The same image runs the one-shot scripts: `node dist/scripts/migrate.js` (migrate
# SHOP_SERVICE's database) and `node dist/scripts/seed.js` (demo data); `grpc-health-probe` is
# the health check.

# Compile: every dependency, the TypeScript compiler, then only what runs is kept.
FROM node:24-bookworm-slim AS build
WORKDIR /app
# The SQLite drivers' native addons (better-sqlite3, and sqlite3 for SHOP_SQLITE_DRIVER=sqlite3)
# install a prebuilt binary when they can download one, and build from source otherwise, which
# needs a compiler and Python. PostgreSQL (SHOP_DATABASE_URL) needs nothing native.
RUN apt-get update \
  && apt-get install -y --no-install-recommends g++ make python3 \
  && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY kit kit
COPY services services
COPY scripts scripts
COPY deploy/settings.ts deploy/settings.ts
COPY gen/ts gen/ts
COPY gen/descriptor gen/descriptor
# dist/ holds the services and scripts, each bundled into one file (scripts/build.ts), and the
# descriptor set reflection serves; the prune drops the compiler, tsx, the test and lint tools.
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# The health check the compose file runs: grpc.health.v1 without starting Node.js.
FROM golang:1.26-bookworm AS probe
RUN CGO_ENABLED=0 GOBIN=/out go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.63

FROM node:24-bookworm-slim
WORKDIR /app
# NODE_OPTIONS, MALLOC_ARENA_MAX: deploy/settings.ts says why (RUNTIME_ENV; a test keeps them equal).
ENV NODE_ENV=production \
  NODE_OPTIONS="--max-semi-space-size=4 --max-old-space-size=96 --expose-gc" \
  MALLOC_ARENA_MAX=2 \
  SHOP_HOST=0.0.0.0 \
  SHOP_DATA_DIR=/data
COPY --from=probe /out/grpc-health-probe /usr/local/bin/grpc-health-probe
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
# A new named volume takes the owner of its mount point from the image. Nothing here runs npm,
# npx, corepack or yarn: they go, with the advisories of the packages they bundle.
RUN mkdir -p /data && chown 1000:1000 /data \
  && rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack /opt/yarn-* \
    /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /usr/local/bin/yarn \
    /usr/local/bin/yarnpkg
VOLUME /data
# The node user, by number, so Kubernetes can check runAsNonRoot.
USER 1000:1000
# Each service listens on its registry port (services/registry.ts) unless SHOP_PORT says otherwise.
# node is PID 1 and takes SIGTERM itself from its first moment (kit/runtime/run.ts runService): at
# once while starting, gracefully once serving.
CMD ["node", "dist/services/main.js"]
