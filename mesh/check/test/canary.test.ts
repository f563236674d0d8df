import { spawnSync } from "node:child_process";
import {
  chmodSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { localShopWarning, setWeights } from "../../canary/canary.js";
import {
  analyze,
  formatFindings,
  type K8sObject,
  kustomizeBuild,
  readObjects,
  repoRoot,
  validateSchemas,
  withReplacements,
} from "../src/index.js";
import { built, istioSchemas, repoFacts } from "./support.js";

const cli = join(repoRoot, "mesh", "canary", "canary.js");
const meshDir = join(repoRoot, "mesh", "istio");
const committed = readFileSync(join(meshDir, "payment.yaml"));

/** A scratch copy of kustomize/ and mesh/istio/, laid out like the repository. */
let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "thinmesh-canary-"));
  cpSync(join(repoRoot, "kustomize"), join(root, "kustomize"), { recursive: true });
  cpSync(meshDir, join(root, "mesh", "istio"), { recursive: true });
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const copy = () => join(root, "mesh", "istio");
const payment = () => readFileSync(join(copy(), "payment.yaml"));
const canary = (args: string[], env: NodeJS.ProcessEnv = process.env) =>
  spawnSync(process.execPath, [cli, ...args, "--dir", copy()], { encoding: "utf8", env });

function weights(text: string): number[] {
  const vs = parseAllDocuments(text)
    .map((d) => d.toJS())
    .find((o) => o?.kind === "VirtualService");
  return vs.spec.http[0].route.map((r: { weight: number }) => r.weight);
}

describe("the canary CLI", () => {
  it("the committed payment.yaml is the rolled-back state (100/0)", () => {
    expect(weights(committed.toString("utf8"))).toEqual([100, 0]);
    expect(setWeights(meshDir, "payment", 0).text).toBe(committed.toString("utf8"));
  });

  it("payment 10 sets 90/10, keeps every comment, and the result passes the checks", () => {
    const result = canary(["payment", "10"]);
    expect(result.stderr).toContain("payment: v1 90 %, v2 10 %");
    expect(result.status).toBe(0);
    const text = payment().toString("utf8");
    expect(weights(text)).toEqual([90, 10]);
    const before = committed.toString("utf8").split("\n");
    const after = text.split("\n");
    expect(after.length).toBe(before.length);
    expect(after.filter((line, i) => line !== before[i])).toEqual([
      "          weight: 90",
      "          weight: 10",
    ]);

    // dev deploys payment v2: the split is sound there.
    const dev = kustomizeBuild(join(root, "kustomize", "overlays", "dev"));
    expect(formatFindings(analyze(dev, repoFacts()))).toBe("");
    expect(formatFindings(validateSchemas(dev, istioSchemas()))).toBe("");
    // prod does not: 10 % would go to a subset with no pods.
    const prod = kustomizeBuild(join(root, "kustomize", "overlays", "prod"));
    expect(formatFindings(analyze(prod, repoFacts(), ["routing"]))).toMatch(
      /subset v2 \(version=v2\) of payment gets weight 10 but selects no Deployment/,
    );
  });

  it("rollback restores the committed file byte for byte, after a split and after promote", () => {
    for (const step of ["10", "50", "promote"]) {
      expect(canary(["payment", step]).status).toBe(0);
    }
    expect(weights(payment().toString("utf8"))).toEqual([0, 100]);
    expect(canary(["payment", "rollback"]).status).toBe(0);
    expect(payment().equals(committed)).toBe(true);
  });

  for (const [args, message] of [
    [
      ["shipping", "10"],
      /unknown service "shipping": no VirtualService of that name with v1 and v2 subsets .*\(known: payment\)/,
    ],
    [["catalog", "10"], /unknown service "catalog"/],
    [
      ["payment", "101"],
      /"101" is not a percentage: give a whole number from 0 to 100, "promote" or "rollback"/,
    ],
    [["payment", "-1"], /"-1" is not a percentage/],
    [["payment", "abc"], /"abc" is not a percentage/],
    [["payment", "12.5"], /"12\.5" is not a percentage/],
    [["payment"], /missing the percentage/],
    [["payment", "10", "--force"], /unknown option --force/],
  ] as [string[], RegExp][]) {
    it(`${args.join(" ")}: a clear error, exit code 2, the file untouched`, () => {
      const result = canary(args);
      expect(result.stderr).toMatch(message);
      expect(result.status).toBe(2);
      expect(payment().equals(committed)).toBe(true);
    });
  }

  it("--dry-run prints the edited file and writes nothing", () => {
    const result = canary(["payment", "50", "--dry-run"]);
    expect(result.status).toBe(0);
    expect(weights(result.stdout)).toEqual([50, 50]);
    expect(payment().equals(committed)).toBe(true);
  });

  it("--apply pipes the edited file to kubectl apply -f -", () => {
    const bin = join(root, "bin");
    mkdirSync(bin);
    const record = join(root, "kubectl-record");
    writeFileSync(
      join(bin, "kubectl"),
      `#!/bin/sh\n[ "$1" = config ] && { echo kind-thinmesh; exit 0; }\necho "$@" > "${record}.args"\ncat > "${record}.stdin"\n`,
    );
    chmodSync(join(bin, "kubectl"), 0o755);
    const result = canary(["payment", "10", "--apply"], {
      ...process.env,
      PATH: `${bin}:${process.env.PATH}`,
    });
    expect(result.status).toBe(0);
    expect(readFileSync(`${record}.args`, "utf8").trim()).toBe("apply -f -");
    expect(readFileSync(`${record}.stdin`, "utf8")).toBe(payment().toString("utf8"));
  });

  it("--apply reports a failing kubectl with exit code 1", () => {
    const bin = join(root, "bin");
    mkdirSync(bin);
    writeFileSync(
      join(bin, "kubectl"),
      "#!/bin/sh\n[ \"$1\" = config ] && { echo kind-thinmesh; exit 0; }\ncat > /dev/null\necho 'no cluster' >&2\nexit 3\n",
    );
    chmodSync(join(bin, "kubectl"), 0o755);
    const result = canary(["payment", "10", "--apply"], {
      ...process.env,
      PATH: `${bin}:${process.env.PATH}`,
    });
    expect(result.stderr).toMatch(/kubectl apply failed \(exit code 3\)/);
    expect(result.status).toBe(1);
  });

  const hasKubectl =
    spawnSync("kubectl", ["version", "--client"], { stdio: "ignore" }).status === 0;
  it.skipIf(!hasKubectl)(
    "--apply without a cluster context refuses before editing anything",
    () => {
      // The real kubectl with an empty kubeconfig: no current context. Without the check it
      // would send the file to localhost:8080, the local shop's ingress.
      const kubeconfig = join(root, "kubeconfig");
      writeFileSync(kubeconfig, "");
      const result = canary(["payment", "10", "--apply"], {
        ...process.env,
        KUBECONFIG: kubeconfig,
      });
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(
        /canary: --apply needs a cluster, and kubectl has no current context \(.*\); .*nothing was changed/,
      );
      expect(payment().equals(committed)).toBe(true);
    },
  );

  it("--apply without kubectl refuses before editing anything", () => {
    const result = canary(["payment", "10", "--apply"], {
      ...process.env,
      PATH: join(root, "none"),
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(
      /canary: --apply needs kubectl, which cannot run .*nothing was changed/,
    );
    expect(payment().equals(committed)).toBe(true);
  });
});

describe("the canary CLI and a running local shop", () => {
  /** A stand-in for mesh/local's admin port answering /endpoints with `endpoints`. */
  async function adminPort(endpoints: unknown[]) {
    const server = createServer((req, res) => {
      if (req.url !== "/endpoints") return void res.writeHead(404).end();
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(endpoints));
    });
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return { url, [Symbol.asyncDispose]: () => new Promise<void>((d) => server.close(() => d())) };
  }
  const instance = (version: string, ready = true) => ({
    id: `payment-${version}-0`,
    workload: "payment",
    version,
    ready,
  });

  it("warns when a subset given traffic has no ready instance there (503 no healthy upstream)", async () => {
    await using admin = await adminPort([instance("v1")]);
    const warning = await localShopWarning("payment", 10, admin.url);
    expect(warning).toContain("no ready payment v2 instance");
    expect(warning).toContain('10 % of the calls to payment will answer 503 "no healthy upstream"');
    expect(warning).toContain("DATABASE_URL");
    // Rolling back to v1 only needs v1.
    expect(await localShopWarning("payment", 0, admin.url)).toBeUndefined();
  });

  it("an instance that is not ready does not count; promote needs v2 only", async () => {
    await using admin = await adminPort([instance("v1"), instance("v2", false)]);
    expect(await localShopWarning("payment", 100, admin.url)).toContain("no ready payment v2");
    await using both = await adminPort([instance("v1", false), instance("v2")]);
    expect(await localShopWarning("payment", 100, both.url)).toBeUndefined();
    expect(await localShopWarning("payment", 50, both.url)).toContain("no ready payment v1");
  });

  it("says nothing when no shop answers", async () => {
    const admin = await adminPort([]);
    const url = admin.url;
    await admin[Symbol.asyncDispose]();
    expect(await localShopWarning("payment", 10, url)).toBeUndefined();
  });
});

describe("the variants in mesh/istio/variants", () => {
  const variantsDir = join(meshDir, "variants");
  const virtualService = (objects: K8sObject[]) =>
    objects.find((o) => o.kind === "VirtualService")!;

  for (const [v1, v2] of [
    [90, 10],
    [50, 50],
    [100, 0],
    [0, 100],
  ]) {
    it(`payment-${v1}-${v2}.yaml is what the canary CLI writes for ${v2}`, () => {
      const variant = virtualService(readObjects(join(variantsDir, `payment-${v1}-${v2}.yaml`)));
      const cli = virtualService(
        parseAllDocuments(setWeights(meshDir, "payment", v2!).text).map((d) => d.toJS()),
      );
      expect(variant).toEqual(cli);
    });
  }

  it("every variant passes the analyzer in dev (where payment v2 runs)", () => {
    const files = readdirSync(variantsDir).filter((f) => f.endsWith(".yaml"));
    expect(files.length).toBe(7);
    for (const file of files) {
      const objects = withReplacements(built("dev"), readObjects(join(variantsDir, file)));
      expect(`${file}\n${formatFindings(analyze(objects, repoFacts()))}`).toBe(`${file}\n`);
    }
  });

  it("the fault variants inject something (percentage set)", () => {
    for (const file of ["payment-fault-abort.yaml", "payment-fault-delay.yaml"]) {
      const vs = parse(readFileSync(join(variantsDir, file), "utf8"));
      const fault = vs.spec.http[0].fault;
      expect((fault.abort ?? fault.delay).percentage.value).toBeGreaterThan(0);
    }
  });
});
