# syntax=docker/dockerfile:1
#
# The image of every service; the build argument SERVICE names the folder under services/.
# The build context is the repository root:
#
#   docker build --build-arg SERVICE=catalog -t thinmesh/catalog .
#
# SERVICE has no default: without it the build stops at the first COPY
# ("/services/package.json": not found) rather than build some other service by mistake.
# skaffold.yaml, the Tiltfile and CI pass it per image.
#
# Stages: manifests (the lockfile and the package.json files), deps (the production
# dependencies of this service's workspaces, nothing else), build (tsc), files (the service's
# folder without what only building or testing uses), dev (what `tilt up` runs and
# live-updates; never deployed otherwise) and runtime, the image, built by default because it
# is the last stage. The image holds the compiled JavaScript, production node_modules, the
# package.json files, config/subscriptions.yaml and whatever else the service's folder holds
# besides src/, tests, tsconfig*.json and *.config.ts (its drizzle/ migrations; catalog's
# seed/), laid out under /app as in the repository so that every path the code resolves from
# its own location works unchanged. It runs as uid 1000 (numeric, so that Kubernetes can
# check runAsNonRoot), writes nothing (a read-only root filesystem works; /tmp is the only
# scratch space it may use) and starts node directly as PID 1: SIGTERM reaches the service,
# which drains in-flight requests and exits 0.
#
# The exec-form CMD cannot name the service (Docker substitutes no ARG or ENV in it, and a
# shell in between would swallow SIGTERM), so the image's WORKDIR is the service's folder,
# /app/services/$SERVICE, and CMD runs dist/main.js from there: the command `npm start` runs
# in the service's folder, and what an operator runs by hand in the container
# (node dist/cli/rotate-keys.js) is the workspace's script as written. The code finds its
# files from its own location (import.meta.url), never from the working directory.
#
# ARGs before the first FROM are only seen by FROM lines; each stage that uses SERVICE
# declares it again (ARG SERVICE), which gives it the --build-arg value.
# test/images checks this file for each service and runs its CMD against the built output.

# Node.js 24 LTS on Debian 13 slim. Bump deliberately (an even major, 22 or later).
ARG NODE_IMAGE=node:24.21.0-trixie-slim

# The lockfile and the package.json of this service and of the workspaces it depends on: what
# both installs below work from.
FROM ${NODE_IMAGE} AS manifests
ARG SERVICE
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
COPY packages/contracts/package.json packages/contracts/
COPY packages/platform/package.json packages/platform/
COPY services/${SERVICE}/package.json services/${SERVICE}/

# Only this workspace and the workspaces it depends on, as locked; no dev dependencies and no
# install scripts (no production dependency needs one). The fixes in patches/ (postgres.js,
# connect-node; see patches/README.md) are applied as `npm ci` does on a laptop, by the
# locked patch-package, which stays out of the image.
FROM manifests AS deps
ARG SERVICE
COPY patches/ patches/
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --workspace services/${SERVICE} --ignore-scripts --no-audit --no-fund \
    && npx --yes patch-package@8.0.1 --error-on-fail \
    && rm -rf patches

# The same workspaces with their dev dependencies, plus the root's (TypeScript).
FROM manifests AS build
ARG SERVICE
RUN --mount=type=cache,target=/root/.npm \
    npm ci --workspace services/${SERVICE} --include-workspace-root \
      --ignore-scripts --no-audit --no-fund
COPY patches/ patches/
RUN node_modules/.bin/patch-package --error-on-fail
COPY tsconfig.base.json ./
COPY packages/contracts/gen packages/contracts/gen
COPY packages/platform/tsconfig.build.json packages/platform/
COPY packages/platform/src packages/platform/src
COPY services/${SERVICE}/tsconfig.build.json services/${SERVICE}/
COPY services/${SERVICE}/src services/${SERVICE}/src
RUN node node_modules/typescript/bin/tsc -b services/${SERVICE}/tsconfig.build.json

# The files the service reads at run time besides its JavaScript, whatever they are: its whole
# folder (.dockerignore already leaves out node_modules, dist, tests and *.md) minus the
# sources and the build and tooling configuration.
FROM ${NODE_IMAGE} AS files
ARG SERVICE
WORKDIR /app/services/${SERVICE}
COPY services/${SERVICE} ./
RUN rm -rf src test tsconfig*.json *.config.ts

# tilt up only (docker_build target="dev"): Tilt syncs src/ into this container, runs tsc
# here, and node --watch restarts the service on the new JavaScript. The files it rewrites
# belong to the service's user; the Tiltfile relaxes readOnlyRootFilesystem for this.
FROM build AS dev
ARG SERVICE
COPY config/subscriptions.yaml config/
COPY --from=files /app/services/${SERVICE} services/${SERVICE}
RUN chown -R 1000:1000 packages/platform services/${SERVICE}
USER 1000:1000
EXPOSE 8080
WORKDIR /app/services/${SERVICE}
ENTRYPOINT []
CMD ["node", "--watch", "dist/main.js"]

FROM ${NODE_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="thinmesh-${SERVICE}" \
      org.opencontainers.image.description="thinmesh ${SERVICE} service" \
      org.opencontainers.image.licenses="Apache-2.0"
# Package managers are not needed to run the service: leave them out of the image.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
      /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
      /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-*
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app ./
COPY packages/contracts/gen packages/contracts/gen
COPY --from=build /app/packages/platform/dist packages/platform/dist
COPY --from=build /app/services/${SERVICE}/dist services/${SERVICE}/dist
COPY --from=files /app/services/${SERVICE} services/${SERVICE}
COPY config/subscriptions.yaml config/
USER 1000:1000
EXPOSE 8080
WORKDIR /app/services/${SERVICE}
ENTRYPOINT []
CMD ["node", "dist/main.js"]
