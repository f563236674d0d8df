// Transient failures (a lost database connection, a peer resetting or refusing connections, a
// serialization conflict) answer unavailable, so that callers retry; a peer's answer passes on
// only when the caller can act on it.
import { type AddressInfo, createServer, type Socket } from "node:net";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MoneySchema } from "@thinmesh/contracts/shop/common/v1/money_pb.js";
import {
  DeliverRequestSchema,
  EventSinkService,
} from "@thinmesh/contracts/shop/events/v1/events_pb.js";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import {
  createPeerClient,
  invalidArgument,
  peerErrorInterceptor,
  startService,
  toConnectError,
} from "../src/index.js";
import { buildEventEnvelope, createTestDatabase, testEnv } from "../src/testing/index.js";
import { sinkService } from "./fixtures/sink-service.js";

const logger = pino({ level: "silent" });
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** An error as postgres.js or Node raise it, wrapped as drizzle wraps a failed query. */
function databaseError(code: string) {
  const cause = Object.assign(new Error(`database said ${code}`), { code });
  return Object.assign(new Error("Failed query: insert ...\nparams: x"), { cause });
}

const codeOf = (error: unknown) => Code[toConnectError(error, logger, "/test/Method").code];

describe("toConnectError", () => {
  it.each([
    "CONNECTION_CLOSED",
    "CONNECTION_ENDED",
    "CONNECTION_DESTROYED",
    "CONNECT_TIMEOUT",
    "ECONNRESET",
    "ECONNREFUSED",
    "EPIPE",
    "08006",
    "08001",
    "08P01",
    "57P01",
    "57P03",
    "40001",
    "40P01",
  ])("answers %s as unavailable", (code) => {
    expect(codeOf(databaseError(code))).toBe("Unavailable");
    expect(codeOf(Object.assign(new Error("bare"), { code }))).toBe("Unavailable");
  });

  it("answers a database's missing Unix socket (restarting) as unavailable, other ENOENT as internal", () => {
    const socketGone = Object.assign(new Error("connect ENOENT /tmp/pg/.s.PGSQL.5432"), {
      code: "ENOENT",
      syscall: "connect",
    });
    expect(codeOf(new Error("Failed query", { cause: socketGone }))).toBe("Unavailable");
    const noFile = Object.assign(new Error("open ENOENT x"), { code: "ENOENT", syscall: "open" });
    expect(codeOf(noFile)).toBe("Internal");
  });

  it("answers text Postgres cannot store (22021) as invalid_argument", () => {
    expect(codeOf(databaseError("22021"))).toBe("InvalidArgument");
  });

  it("keeps internal for other failures, and domain and own Connect errors as they are", () => {
    expect(codeOf(databaseError("23502"))).toBe("Internal");
    expect(codeOf(new Error("a bug"))).toBe("Internal");
    expect(codeOf(invalidArgument("bad"))).toBe("InvalidArgument");
    expect(codeOf(new ConnectError("no", Code.PermissionDenied))).toBe("PermissionDenied");
    // connect-node reports a write to a closed socket as internal: it is transient.
    const epipe = Object.assign(new Error("write EPIPE"), { code: "EPIPE" });
    expect(
      codeOf(new ConnectError("write EPIPE", Code.Internal, undefined, undefined, epipe)),
    ).toBe("Unavailable");
  });
});

/** A peer answering every Deliver with `code`. */
function peerAnswering(code: Code) {
  return createClient(
    EventSinkService,
    createRouterTransport(
      (router) =>
        router.service(EventSinkService, {
          deliver() {
            throw new ConnectError("peer says no", code);
          },
        }),
      { transport: { interceptors: [peerErrorInterceptor()] } },
    ),
  );
}

const request = () =>
  create(DeliverRequestSchema, {
    events: [
      buildEventEnvelope(
        MoneySchema,
        { currencyCode: "EUR", amountMinor: 1n },
        { source: "test", type: "test.forward" },
      ),
    ],
  });

async function failure(call: Promise<unknown>) {
  return call.then(
    () => {
      throw new Error("the call succeeded");
    },
    (e: unknown) => e,
  );
}

describe("a peer's errors", () => {
  it.each([
    [Code.Unavailable, "Unavailable"],
    [Code.DeadlineExceeded, "DeadlineExceeded"],
    [Code.ResourceExhausted, "ResourceExhausted"],
    [Code.InvalidArgument, "Internal"],
    [Code.NotFound, "Internal"],
    [Code.PermissionDenied, "Internal"],
    [Code.Internal, "Internal"],
  ])("a peer's %s is answered as %s", async (peerCode, answered) => {
    const error = await failure(peerAnswering(peerCode).deliver(request()));
    // Services still see the peer's own code.
    expect(ConnectError.from(error).code).toBe(peerCode);
    expect(codeOf(error)).toBe(answered);
  });

  it("a peer that resets the connection (draining, restarting) is unavailable", async () => {
    const sockets = new Set<Socket>();
    const resetting = createServer((socket) => {
      sockets.add(socket);
      socket.once("data", () => socket.resetAndDestroy());
    });
    await new Promise<void>((resolve) => resetting.listen(0, "127.0.0.1", resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy();
          resetting.close(() => resolve());
        }),
    );
    const url = `http://127.0.0.1:${(resetting.address() as AddressInfo).port}`;
    const error = await failure(createPeerClient(EventSinkService, url).deliver(request()));
    expect(ConnectError.from(error).code).toBe(Code.Unavailable);

    // Through a real service calling that peer.
    const database = await createTestDatabase("platform_transient");
    cleanups.push(database.drop);
    const front = await startService(sinkService, testEnv(database, { PEER_URL: url }));
    cleanups.push(front.stop);
    await front.ready;
    const client = createClient(
      EventSinkService,
      createConnectTransport({ baseUrl: front.url, httpVersion: "1.1" }),
    );
    const answer = ConnectError.from(await failure(client.deliver(request())));
    expect(answer.code).toBe(Code.Unavailable);
    expect(answer.rawMessage).toMatch(/EventSinkService\/Deliver.*try again/);
  });

  it("a refused connection is unavailable", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const error = await failure(
      createPeerClient(EventSinkService, `http://127.0.0.1:${port}`).deliver(request()),
    );
    expect(codeOf(error)).toBe("Unavailable");
  });
});
