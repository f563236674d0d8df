import type { AddressInfo } from "node:net";
import type { DescMessage, DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { EventSinkService } from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { Hono } from "hono";
import type { z } from "zod";
import { type Access, type AccessRules, accessByPath, createAccessInterceptor } from "./access.js";
import { type baseConfigSchema, ConfigError, loadConfig } from "./config.js";
import { newContext, runWithContext } from "./context.js";
import { type Database, openDatabase } from "./database.js";
import { DomainError } from "./errors.js";
import { createEventBus, type EventBus } from "./events/bus.js";
import { deadLetterRoutes } from "./events/dead-letters.js";
import { createRelay, type Relay } from "./events/relay.js";
import { startPruning } from "./events/retention.js";
import { createEventSink, type EventHandler } from "./events/sink.js";
import { loadProducers, loadSubscriptions, type Subscriptions } from "./events/subscriptions.js";
import {
  contextInterceptor,
  observeInterceptor,
  readinessInterceptor,
  validationInterceptor,
} from "./interceptors.js";
import { createLogger, flushLogs, type Logger } from "./logger.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { createOnePortServer } from "./server.js";
import type { TokenVerifier } from "./tokens.js";
import { initTracing } from "./tracing.js";

type BaseConfig = z.infer<typeof baseConfigSchema>;

/** A Connect service with its implementation and the access rule of each method. */
export interface ServiceBinding {
  register(router: ConnectRouter): void;
  access: Map<string, Access>;
}

/** Binds an implementation to its service descriptor with one access rule per method. */
export function bind<S extends DescService>(
  service: S,
  implementation: ServiceImpl<S>,
  access: AccessRules<S>,
): ServiceBinding {
  return {
    register: (router) => router.service(service, implementation),
    access: accessByPath(service, access),
  };
}

export interface ServiceDeps<TConfig, TSchema extends Record<string, unknown>> {
  config: TConfig;
  logger: Logger;
  database: Database<TSchema>;
  metrics: Metrics;
  /**
   * This service's transactional outbox for the event types it publishes; the subscribers
   * come from EVENT_SUBSCRIPTIONS_FILE. Return it in ServiceParts.events to have it relayed.
   */
  eventBus(produces: readonly DescMessage[]): EventBus;
}

export interface ServiceParts {
  rpc: ServiceBinding[];
  /** Plain HTTP routes next to /healthz, /readyz and /metrics. */
  routes?: (app: Hono) => void;
  verifier?: TokenVerifier;
  /** Runs once the database is migrated, before the service reports ready (seeding, keys). */
  onDatabaseReady?: () => Promise<void>;
  /** Runs on shutdown after the server has drained, before the database closes. */
  onClose?: () => Promise<void>;
  /**
   * The service's events: the bus it publishes through (relayed to the subscribers once the
   * service is ready) and the handlers of the events it consumes (served as
   * EventSinkService, each event applied once).
   */
  events?: { bus: EventBus; consumes?: EventHandler[] };
}

export interface ServiceDefinition<
  TSchemaShape extends z.ZodObject,
  TSchema extends Record<string, unknown>,
> {
  name: string;
  config: TSchemaShape;
  database: { schema: TSchema; migrationsFolder: string };
  create(
    deps: ServiceDeps<z.infer<TSchemaShape> & BaseConfig, TSchema>,
  ): ServiceParts | Promise<ServiceParts>;
}

export interface RunningService<TSchema extends Record<string, unknown> = Record<string, unknown>> {
  /** Where it listens: http://host:port, or unix:<path> behind a local sidecar. */
  url: string;
  logger: Logger;
  database: Database<TSchema>;
  /**
   * Resolves when the database is migrated and the service answers RPCs. Rejects if startup
   * hit a problem that waiting cannot fix (a ConfigError from onDatabaseReady).
   */
  ready: Promise<void>;
  isReady(): boolean;
  /** Drains in-flight requests, then closes the database. */
  stop(): Promise<void>;
}

/**
 * Starts a service: configuration, logs, the database, one port for RPCs and plain routes.
 * The port opens at once so that /healthz answers; until the database is reachable and
 * migrated, /readyz says why not and RPCs fail with unavailable, while connecting is retried.
 */
export async function startService<
  TSchemaShape extends z.ZodObject,
  TSchema extends Record<string, unknown>,
>(
  definition: ServiceDefinition<TSchemaShape, TSchema>,
  env: Record<string, string | undefined> = process.env,
): Promise<RunningService<TSchema>> {
  const config = loadConfig(definition.config, env) as z.infer<TSchemaShape> & BaseConfig;
  const logger = createLogger({
    service: definition.name,
    version: config.SERVICE_VERSION,
    level: config.LOG_LEVEL,
  });
  // OpenTelemetry spans when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise a no-op.
  const tracing = await initTracing({
    service: definition.name,
    version: config.SERVICE_VERSION,
    env,
    onExportError: (err) => logger.warn({ err }, "cannot export spans; tracing continues"),
  });
  const metrics = createMetrics(definition.name);
  const database = await openDatabase({
    url: config.DATABASE_URL,
    dataDir: config.PGLITE_DATA_DIR,
    ...definition.database,
  });
  let subscriptions: Subscriptions | undefined;
  const eventBus = (produces: readonly DescMessage[]) => {
    subscriptions ??= loadSubscriptions(config.EVENT_SUBSCRIPTIONS_FILE);
    return createEventBus({ source: definition.name, db: database.db, subscriptions, produces });
  };
  let parts: ServiceParts;
  let relay: Relay | undefined;
  let pruning: { stop(): Promise<void> } | undefined;
  try {
    parts = await definition.create({ config, logger, database, metrics, eventBus });
    relay = parts.events && relayFor(parts.events.bus, env, config, database, logger, metrics);
  } catch (error) {
    await database.close();
    await tracing.shutdown();
    throw error;
  }
  const rpc = [...parts.rpc];
  if (parts.events?.consumes?.length) {
    const sink = createEventSink(parts.events.bus, parts.events.consumes, {
      logger: logger.child({ component: "event-sink" }),
      metrics,
      producers: loadProducers(config.EVENT_SUBSCRIPTIONS_FILE),
    });
    rpc.push(bind(EventSinkService, sink, { deliver: "internal" }));
  }

  let notReady: string | undefined = "connecting to the database";
  let stopping = false;
  const access = new Map(rpc.flatMap((binding) => [...binding.access]));

  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const reason = stopping ? "shutting down" : (notReady ?? (await databaseProblem(database)));
    return reason ? c.json({ status: "not ready", reason }, 503) : c.json({ status: "ready" });
  });
  app.get("/metrics", async (c) =>
    c.text(await metrics.registry.metrics(), 200, { "content-type": metrics.registry.contentType }),
  );
  parts.routes?.(app);
  if (relay && parts.verifier) {
    deadLetterRoutes(app, database.db, parts.verifier, relay.wake);
  }
  app.notFound((c) =>
    c.json({ code: "not_found", message: `no route for ${c.req.method} ${c.req.path}` }, 404),
  );
  app.onError((error, c) => {
    if (error instanceof DomainError) {
      return c.json({ code: error.kind, message: error.message }, httpStatusOf[error.kind]);
    }
    logger.error({ err: error, path: c.req.path }, "unexpected error in route");
    return c.json({ code: "internal", message: "internal error" }, 500);
  });

  const server = createOnePortServer({
    routes: (router) => {
      for (const binding of rpc) binding.register(router);
    },
    interceptors: [
      contextInterceptor(),
      tracing.serverInterceptor(),
      observeInterceptor(logger, metrics),
      readinessInterceptor(definition.name, () => (stopping ? "shutting down" : notReady)),
      createAccessInterceptor(access, parts.verifier),
      validationInterceptor(),
    ],
    fetch: app.fetch,
    readMaxBytes: config.MAX_REQUEST_BYTES,
  });
  const address =
    config.LISTEN_FD === undefined
      ? await server.listen(config.PORT, config.HOST)
      : await server.listenOnFd(config.LISTEN_FD);
  const url = listeningUrl(address, config.LISTEN_FD);
  logger.info({ url, database: database.kind }, "listening; waiting for the database");

  const ready = runWithContext(newContext(), async () => {
    for (let attempt = 1; !stopping; attempt++) {
      try {
        await database.migrate();
        await parts.onDatabaseReady?.();
        notReady = undefined;
        relay?.start();
        if (parts.events) {
          pruning = startPruning({
            db: database.db,
            logger: logger.child({ component: "event-pruning" }),
            keepHours: config.EVENT_RETENTION_HOURS,
          });
        }
        logger.info({ url }, "ready");
        return;
      } catch (error) {
        if (error instanceof ConfigError) {
          notReady = error.message;
          throw error;
        }
        const delay = Math.min(250 * 2 ** attempt, 5_000);
        notReady = `database not usable yet (attempt ${attempt}: ${(error as Error).message})`;
        logger.warn({ err: error, attempt, retryInMs: delay }, "database not usable yet; retrying");
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  });

  return {
    url,
    logger,
    database,
    ready,
    isReady: () => notReady === undefined && !stopping,
    async stop() {
      if (stopping) return;
      stopping = true;
      logger.info({ inFlight: server.inFlight() }, "shutting down: draining requests");
      await server.close(config.SHUTDOWN_GRACE_MS);
      await ready.catch(() => {});
      await relay?.stop();
      await pruning?.stop();
      await parts.onClose?.();
      await database.close();
      await tracing.shutdown();
      logger.info("stopped");
      logger.flush();
    },
  };
}

/** The relay for a bus with subscribers; their URLs come from <NAME>_URL variables. */
function relayFor(
  bus: EventBus,
  env: Record<string, string | undefined>,
  config: BaseConfig,
  database: Database<Record<string, unknown>>,
  logger: Logger,
  metrics: Metrics,
): Relay | undefined {
  const subscribers = [...new Set([...bus.routes.values()].flat())];
  if (subscribers.length === 0) return undefined;
  const subscriberUrls: Record<string, string> = {};
  const problems: string[] = [];
  for (const subscriber of subscribers) {
    const variable = `${subscriber.toUpperCase().replace(/-/g, "_")}_URL`;
    const url = env[variable];
    if (url && /^https?:\/\//.test(url)) subscriberUrls[subscriber] = url;
    else
      problems.push(
        `${variable}: the base URL of event subscriber "${subscriber}" is required (it is not set or not http(s))`,
      );
  }
  if (problems.length) throw new ConfigError(problems);
  return createRelay({
    db: database.db,
    bus,
    subscriberUrls,
    logger: logger.child({ component: "outbox-relay" }),
    metrics,
    pollIntervalMs: config.OUTBOX_POLL_MS,
    maxAttempts: config.OUTBOX_MAX_ATTEMPTS,
    baseBackoffMs: config.OUTBOX_BASE_BACKOFF_MS,
    maxBackoffMs: config.OUTBOX_MAX_BACKOFF_MS,
    concurrency: config.OUTBOX_CONCURRENCY,
    batchSize: config.OUTBOX_BATCH_SIZE,
  });
}

const httpStatusOf = {
  invalid_argument: 400,
  not_found: 404,
  already_exists: 409,
  failed_precondition: 412,
  unauthenticated: 401,
  permission_denied: 403,
  unavailable: 503,
} as const;

async function databaseProblem(database: Database<Record<string, unknown>>) {
  try {
    await database.ping();
    return undefined;
  } catch (error) {
    return `database not reachable: ${(error as Error).message}`;
  }
}

/**
 * The entry point of a service process: starts it, and on SIGTERM or SIGINT drains and exits.
 * A configuration error ends the process with the message naming the variable.
 */
export async function runMain<
  TSchemaShape extends z.ZodObject,
  TSchema extends Record<string, unknown>,
>(definition: ServiceDefinition<TSchemaShape, TSchema>): Promise<void> {
  let logger: Logger | undefined;
  // Every way out writes the buffered log lines first; the last ones say why it ends.
  const exit = async (code: number) => {
    if (logger) await flushLogs(logger);
    process.exit(code);
  };
  const exitOnConfigError = async (error: unknown) => {
    if (!(error instanceof ConfigError)) throw error;
    if (logger) await flushLogs(logger);
    process.stderr.write(`${definition.name}: ${error.message}\n`);
    process.exit(78); // EX_CONFIG
  };
  // Not a way to keep running: the error is logged, the lines flushed, and the process ends
  // as Node would have ended it (exit code 1), for the supervisor to restart it.
  // The wait for the log is short and bounded: a write already under way must finish, or
  // the lines before the fatal one are lost.
  process.once("uncaughtException", (error) => {
    if (!logger) {
      process.stderr.write(`${definition.name}: uncaught exception: ${error.stack}\n`);
      process.exit(1);
    }
    logger.fatal({ err: error }, "uncaught exception; exiting");
    flushLogs(logger, 1_000).finally(() => process.exit(1));
  });
  let service: RunningService<TSchema>;
  try {
    service = await startService(definition);
  } catch (error) {
    return exitOnConfigError(error);
  }
  logger = service.logger;
  service.ready.catch(async (error) => {
    await service.stop().catch(() => {});
    await exitOnConfigError(error);
  });
  const shutdown = (signal: string) => {
    service.logger.info({ signal }, "signal received");
    service.stop().then(
      () => exit(0),
      (error) => {
        service.logger.error({ err: error }, "shutdown failed");
        return exit(1);
      },
    );
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
  // Started by a supervisor with an IPC channel (mesh/local): when that process ends, even
  // by SIGKILL, the channel closes, and this service must not outlive it.
  if (process.channel)
    process.once("disconnect", () => shutdown("disconnect: the parent process is gone"));
}

/** Where the service listens, for its log lines: a URL, or the Unix socket it was handed. */
function listeningUrl(address: AddressInfo | string | null, fd: number | undefined) {
  if (address === null || typeof address === "string") {
    return `unix:${address || `fd ${fd}`}`;
  }
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${address.port}`;
}
