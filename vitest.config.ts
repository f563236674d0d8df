import { defineConfig } from "vitest/config";

// One vitest project per workspace; workspace packages resolve to their TypeScript sources.
export default defineConfig({
  resolve: { conditions: ["thinmesh-source"] },
  ssr: { resolve: { conditions: ["thinmesh-source"] } },
  test: {
    projects: [
      ...[
        "packages/platform",
        "services/auth",
        "services/catalog",
        "services/order",
        "services/payment",
        "mesh/check",
        "mesh/local",
      ].map((dir) => ({
        extends: true as const,
        test: {
          name: dir.split("/")[1],
          root: dir,
          include: ["test/**/*.test.ts"],
          testTimeout: 20_000,
          hookTimeout: 60_000,
        },
      })),
      {
        extends: true as const,
        test: {
          name: "system",
          root: "test/system",
          include: ["**/*.test.ts"],
          globalSetup: ["./build.ts"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      {
        // Dockerfiles, skaffold.yaml, the Tiltfile, the cluster scripts, CI and the Istio/Kiali
        // install configuration; runs each image's CMD against the built output.
        extends: true as const,
        test: {
          name: "images",
          root: "test/images",
          include: ["**/*.test.ts"],
          globalSetup: ["./build.ts"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
