// scripts/cluster-up.sh and cluster-down.sh: syntax (bash -n, and shellcheck where it is
// installed), and a run against stand-ins for kind, minikube, kubectl, curl and istioctl that
// record what the script asks of them.
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { repoRoot } from "./dockerfile.js";

const scripts = ["scripts/cluster-up.sh", "scripts/cluster-down.sh"];
const hasShellcheck = spawnSync("shellcheck", ["--version"]).status === 0;

describe.each(scripts)("%s", (script) => {
  it("is executable and passes bash -n", () => {
    expect(statSync(join(repoRoot, script)).mode & 0o111, "chmod +x").not.toBe(0);
    expect(() => execFileSync("bash", ["-n", join(repoRoot, script)])).not.toThrow();
  });

  it.skipIf(!hasShellcheck)("passes shellcheck", () => {
    const result = spawnSync("shellcheck", ["--shell=bash", join(repoRoot, script)], {
      encoding: "utf8",
    });
    expect(result.stdout + result.stderr).toBe("");
    expect(result.status).toBe(0);
  });
});

const dir = mkdtempSync(join(tmpdir(), "thinmesh-cluster-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Runs a script with a PATH of stand-ins. Each records its command line; curl serves a fake
 * downloadIstio that unpacks an istioctl stand-in and the addon manifests.
 */
function runWithStubs(script: string, args: string[], existing: { kind?: string } = {}) {
  const bin = join(dir, "bin");
  const log = join(dir, "calls.log");
  const home = join(dir, "home");
  rmSync(log, { force: true });
  rmSync(home, { recursive: true, force: true });
  mkdirSync(bin, { recursive: true });
  mkdirSync(home, { recursive: true });
  const stub = `#!/usr/bin/env bash
name="$(basename "$0")"
echo "$name $*" >> "$STUB_LOG"
case "$name $*" in
  "kind get clusters"*) printf '%s\\n' "$STUB_KIND_CLUSTERS" ;;
  "minikube status"*) exit 1 ;;
  "curl "*downloadIstio*)
    cat <<'SCRIPT'
dir="istio-$ISTIO_VERSION"
mkdir -p "$dir/bin" "$dir/samples/addons"
cp "$STUB_SELF" "$dir/bin/istioctl"
for a in prometheus jaeger kiali grafana loki; do echo "kind: List" > "$dir/samples/addons/$a.yaml"; done
SCRIPT
    ;;
  "kubectl "*"--dry-run=client -o yaml"*) echo "kind: Placeholder" ;;
  "kubectl "*"apply -f -"*) cat > /dev/null ;;
esac
exit 0
`;
  const self = join(bin, "stub");
  writeFileSync(self, stub);
  chmodSync(self, 0o755);
  for (const name of ["kind", "minikube", "kubectl", "curl", "docker"]) {
    writeFileSync(join(bin, name), stub);
    chmodSync(join(bin, name), 0o755);
  }
  const result = spawnSync("bash", [join(repoRoot, script), ...args], {
    encoding: "utf8",
    env: {
      PATH: `${bin}:/usr/bin:/bin`,
      HOME: home,
      STUB_LOG: log,
      STUB_SELF: self,
      STUB_KIND_CLUSTERS: existing.kind ?? "",
    },
  });
  let calls: string[] = [];
  try {
    calls = readFileSync(log, "utf8").trim().split("\n");
  } catch {}
  return { status: result.status, output: result.stdout + result.stderr, calls, home };
}

describe("cluster-up.sh", () => {
  it("creates a kind cluster, installs Istio from the repo's config, the pinned addons, and the namespace", () => {
    const { status, output, calls, home } = runWithStubs("scripts/cluster-up.sh", ["kind"]);
    expect(status, output).toBe(0);
    const version = readFileSync(join(repoRoot, "scripts/cluster-up.sh"), "utf8").match(
      /ISTIO_VERSION="\$\{ISTIO_VERSION:-([\d.]+)\}"/,
    )?.[1];
    expect(version).toMatch(/^1\.\d+\.\d+$/);
    const istio = join(home, ".cache/thinmesh", `istio-${version}`);
    const context = "--context kind-thinmesh";
    expect(calls).toEqual(
      expect.arrayContaining([
        "kind create cluster --name thinmesh --wait 180s",
        "kubectl config use-context kind-thinmesh",
        "curl -fsSL https://istio.io/downloadIstio",
        `istioctl install ${context} -y -f ${join(repoRoot, "mesh/istio/install/istio-operator.yaml")}`,
        `kubectl ${context} apply -f ${istio}/samples/addons/prometheus.yaml`,
        `kubectl ${context} apply -f ${istio}/samples/addons/jaeger.yaml`,
        `kubectl ${context} apply -f ${istio}/samples/addons/kiali.yaml`,
        `kubectl ${context} -n istio-system create configmap kiali --from-file=config.yaml=${join(repoRoot, "mesh/kiali/config.yaml")} --dry-run=client -o yaml`,
        `kubectl ${context} label namespace shop istio-injection=enabled --overwrite`,
      ]),
    );
    // Istio before its addons, the addons before Kiali's configuration.
    const index = (prefix: string) => calls.findIndex((c) => c.startsWith(prefix));
    expect(index("istioctl install")).toBeLessThan(index(`kubectl ${context} apply -f ${istio}`));
    expect(index(`kubectl ${context} apply -f ${istio}/samples/addons/kiali.yaml`)).toBeLessThan(
      index(`kubectl ${context} -n istio-system create configmap kiali`),
    );
    expect(output).toMatch(/skaffold dev/);
    expect(output).toMatch(/tilt up/);
    expect(output).toMatch(/localhost:20001\/kiali/);
    expect(output).toMatch(/localhost:16686\/jaeger/);
  });

  it("keeps an existing kind cluster", () => {
    const { status, calls } = runWithStubs("scripts/cluster-up.sh", ["kind"], { kind: "thinmesh" });
    expect(status).toBe(0);
    expect(calls.filter((c) => c.startsWith("kind create"))).toEqual([]);
  });

  it("starts minikube on its default profile (the kube-context skaffold and Tilt recognise)", () => {
    const { status, output, calls } = runWithStubs("scripts/cluster-up.sh", ["minikube"]);
    expect(status, output).toBe(0);
    expect(calls).toEqual(
      expect.arrayContaining([
        "minikube start -p minikube --cpus=4 --memory=8192",
        "kubectl config use-context minikube",
      ]),
    );
  });

  it("refuses anything but kind or minikube", () => {
    for (const args of [[], ["k3d"], ["kind", "extra"]]) {
      const { status, output } = runWithStubs("scripts/cluster-up.sh", args);
      expect(status).toBe(2);
      expect(output).toMatch(/usage: .*kind\|minikube/);
    }
  });
});

describe("cluster-down.sh", () => {
  it("deletes the cluster cluster-up.sh made", () => {
    expect(runWithStubs("scripts/cluster-down.sh", ["kind"]).calls).toEqual([
      "kind delete cluster --name thinmesh",
    ]);
    expect(runWithStubs("scripts/cluster-down.sh", ["minikube"]).calls).toEqual([
      "minikube delete -p minikube",
    ]);
    expect(runWithStubs("scripts/cluster-down.sh", []).status).toBe(2);
  });
});
