import { randomBytes, randomUUID } from "node:crypto";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@thinmesh/contracts/shop/auth/v1/auth_pb.js";
import {
  devAdmin,
  dropShopDatabases,
  type LocalShop,
  type LocalShopOptions,
  startLocalShop,
} from "../../mesh/local/src/shop.js";
import { repoRoot } from "./processes.js";

export interface TestShop {
  shop: LocalShop;
  /** The shop's own copy of mesh/istio, for a test to edit live (with `editableMesh`). */
  meshDir: string;
  /** Access tokens: the dev administrator's and a customer's registered for this shop. */
  admin: string;
  customer: string;
  /** Stops the shop and removes its data directory and databases. */
  stop(): Promise<void>;
}

/**
 * The shop in this process (startLocalShop), for the system tests that watch its access
 * records or edit its configuration: ports from the operating system, a data directory and
 * databases of its own on serverUrl (`thinmesh_<name>_<random>_<service>`), ready, with a
 * customer registered. `editableMesh` runs it on a copy of mesh/istio (TestShop.meshDir).
 */
export async function startTestShop(
  name: string,
  serverUrl: string,
  options: Pick<LocalShopOptions, "events" | "onRecord"> &
    Partial<Omit<LocalShopOptions, "root" | "dataDir" | "databaseUrl" | "databasePrefix">> & {
      editableMesh?: boolean;
    },
): Promise<TestShop> {
  const { editableMesh, ...shopOptions } = options;
  const prefix = `thinmesh_${name}_${randomBytes(3).toString("hex")}`;
  const dataDir = mkdtempSync(join(tmpdir(), `thinmesh-${name}-`));
  const meshDir = editableMesh ? join(dataDir, "istio") : join(repoRoot, "mesh/istio");
  if (editableMesh) cpSync(join(repoRoot, "mesh/istio"), meshDir, { recursive: true });
  let shop: LocalShop | undefined;
  const stop = async () => {
    await shop?.stop();
    rmSync(dataDir, { recursive: true, force: true });
    await dropShopDatabases(serverUrl, prefix);
  };
  try {
    shop = await startLocalShop({
      root: repoRoot,
      ingressPort: 0,
      statsPort: 0,
      logLevel: "warn",
      meshDir,
      ...shopOptions,
      databaseUrl: serverUrl,
      databasePrefix: prefix,
      dataDir,
    });
    await shop.ready(90_000);
    const auth = createClient(
      AuthService,
      createConnectTransport({ baseUrl: shop.ingressUrl, httpVersion: "1.1" }),
    );
    const admin = (await auth.login(devAdmin)).tokens!.accessToken;
    const email = `${name}-${randomUUID().slice(0, 8)}@example.com`;
    await auth.register({ email, password: "correct horse battery" });
    const customer = (await auth.login({ email, password: "correct horse battery" })).tokens!
      .accessToken;
    return { shop, meshDir, admin, customer, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
