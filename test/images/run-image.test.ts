// Runs the exact command each image runs (ENTRYPOINT + CMD of the Dockerfile's final stage)
// in a directory holding only the files that stage copies, with the environment the dev
// overlay gives the container and a fresh database, the way the kubelet would start it:
// /readyz must turn 200, SIGTERM must end it with exit code 0, and it must write nothing
// outside /tmp (the pods run with a read-only root filesystem).
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTestDatabase, type TestDatabase } from "@thinmesh/platform/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { serviceDockerfile, serviceDockerfilePath, servicesWithImages } from "./dockerfile.js";
import { type AssembledImage, assembleImage, clusterEnv, snapshot } from "./image.js";

/** Used when the dev overlay cannot be rendered here (no kubectl): what its ConfigMaps say. */
function fallbackEnv(): Record<string, string> {
  const peer = (name: string) => `http://${name}.shop.svc.cluster.local:8080`;
  return {
    AUTH_JWKS_URL: `${peer("auth")}/.well-known/jwks.json`,
    AUTH_URL: peer("auth"),
    CATALOG_URL: peer("catalog"),
    ORDER_URL: peer("order"),
    PAYMENT_URL: peer("payment"),
    LOG_LEVEL: "info",
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const exited = (child: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
    } else {
      child.once("exit", (code, signal) => resolve({ code, signal }));
    }
  });

describe.each(servicesWithImages())("the %s image", (service) => {
  let dir: string;
  let image: AssembledImage;
  let database: TestDatabase;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), `thinmesh-image-${service}-`));
    // docker build --build-arg SERVICE=<service>: the one Dockerfile, read for this service.
    image = assembleImage(serviceDockerfile(service), dir);
    database = await createTestDatabase(`image_${service}`);
  });
  afterAll(async () => {
    await database?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("holds production dependencies only, and no TypeScript runtime", () => {
    const names = image.packages.map((path) => path.replace(/^.*node_modules\//, ""));
    expect(names).toContain("@connectrpc/connect-node");
    for (const devOnly of [
      "typescript",
      "tsx",
      "ts-node",
      "vitest",
      "@biomejs/biome",
      "drizzle-kit",
    ]) {
      expect(names, `${devOnly} is a dev dependency`).not.toContain(devOnly);
    }
  });

  it("starts from the built output with the cluster's environment, gets ready, and exits 0 on SIGTERM", async () => {
    const port = await freePort();
    const cluster = clusterEnv(service, dir) ?? { env: fallbackEnv(), source: "fallback" };
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      // The container's HOME is not writable either.
      HOME: join(dir, "home-does-not-exist"),
      TMPDIR: join(dir, "tmp"),
      ...image.env,
      ...cluster.env,
      PORT: String(port),
      HOST: "127.0.0.1",
    };
    delete env.PGLITE_DATA_DIR;
    if (database.url) env.DATABASE_URL = database.url;
    else delete env.DATABASE_URL; // THINMESH_TEST_DB=pglite: the embedded database, in memory

    const [command, ...args] = image.argv;
    expect(command).toBe("node");
    const before = snapshot(join(dir, "app"));
    const child = spawn(process.execPath, args, {
      cwd: image.workdir,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout?.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr?.on("data", (chunk) => {
      output += chunk;
    });
    const describeRun = () =>
      `${image.argv.join(" ")} in ${image.workdir} with the environment of ${cluster.source}:\n${output.slice(-4000)}`;

    try {
      const deadline = Date.now() + 60_000;
      let ready = false;
      while (!ready && Date.now() < deadline) {
        if (child.exitCode !== null) break;
        try {
          ready = (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200;
        } catch {}
        if (!ready) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(ready, `/readyz never answered 200: ${describeRun()}`).toBe(true);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);

      child.kill("SIGTERM");
      const { code, signal } = await Promise.race([
        exited(child),
        new Promise<never>((_, reject) =>
          setTimeout(
            () => reject(new Error(`no exit 15 s after SIGTERM: ${describeRun()}`)),
            15_000,
          ),
        ),
      ]);
      expect({ code, signal }, describeRun()).toEqual({ code: 0, signal: null });
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
    // Nothing under /app changed: the image works with a read-only root filesystem.
    expect(snapshot(join(dir, "app"))).toEqual(before);
  });
});

describe("the assembled image", () => {
  it("holds what the Dockerfile copies and nothing else", () => {
    const text = readFileSync(serviceDockerfilePath, "utf8");
    // The runtime stage without the service's folder (its migrations, catalog's seed).
    const withoutFolder = text.replace(
      /^COPY --from=files \/app\/services\/\$\{SERVICE\} services\/\$\{SERVICE\}\n(?=COPY config)/m,
      "",
    );
    expect(withoutFolder).not.toBe(text);
    const dirs = [0, 1].map((i) => mkdtempSync(join(tmpdir(), `thinmesh-assembly-${i}-`)));
    try {
      assembleImage(serviceDockerfile("catalog", text), dirs[0]!);
      assembleImage(serviceDockerfile("catalog", withoutFolder), dirs[1]!);
      const runtimeFiles = ["drizzle/meta/_journal.json", "seed/products.json"];
      for (const file of runtimeFiles) {
        expect(existsSync(join(dirs[0]!, "app/services/catalog", file)), file).toBe(true);
        expect(existsSync(join(dirs[1]!, "app/services/catalog", file)), file).toBe(false);
      }
      // Sources, tests and build configuration never reach the image.
      for (const path of [
        "app/services/catalog/src",
        "app/services/catalog/test",
        "app/services/catalog/tsconfig.build.json",
        "app/services/catalog/drizzle.config.ts",
        "app/packages/platform/src",
      ]) {
        expect(existsSync(join(dirs[0]!, path)), path).toBe(false);
      }
      // Nor does another service's code.
      expect(existsSync(join(dirs[0]!, "app/services/auth"))).toBe(false);
    } finally {
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    }
  });
});
