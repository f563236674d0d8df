import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  checkDockerfile,
  imageArgv,
  imageConfig,
  isIgnored,
  parseDockerfile,
  parseIgnoreRules,
  readDockerignore,
  repoRoot,
  servicesWithImages,
} from "./dockerfile.js";

const services = servicesWithImages();
const dockerfilePath = (service: string) => join(repoRoot, "services", service, "Dockerfile");
const fixture = (name: string) => join(repoRoot, "test/images/fixtures", name);

describe("every service has an image", () => {
  it("has a Dockerfile in each service folder", () => {
    const withCode = readdirSync(join(repoRoot, "services"), { withFileTypes: true })
      .filter(
        (e) => e.isDirectory() && existsSync(join(repoRoot, "services", e.name, "package.json")),
      )
      .map((e) => e.name)
      .sort();
    expect(withCode.length).toBeGreaterThan(0);
    expect(services).toEqual(withCode);
  });
});

describe.each(services)("services/%s/Dockerfile", (service) => {
  const dockerfile = parseDockerfile(dockerfilePath(service));

  it("passes every image check", () => {
    expect(checkDockerfile(dockerfile, { service })).toEqual([]);
  });

  it("runs the service's compiled entry point with node as a non-root uid", () => {
    const config = imageConfig(dockerfile.stages.at(-1)!);
    expect(imageArgv(config)).toEqual(["node", `services/${service}/dist/main.js`]);
    expect(config.user).toMatch(/^[1-9]\d*(:\d+)?$/);
    expect(config.workdir).toBe("/app");
  });

  it("has a dev stage for tilt up that also runs as the service's uid", () => {
    const dev = dockerfile.stages.find((s) => s.name === "dev");
    expect(dev, "a stage named dev (the Tiltfile builds target='dev')").toBeDefined();
    const config = imageConfig(dev!);
    expect(config.user).toBe("1000:1000");
    expect(imageArgv(config)).toEqual(["node", "--watch", `services/${service}/dist/main.js`]);
  });
});

describe("the checks fail on broken Dockerfiles", () => {
  const check = (path: string) => checkDockerfile(parseDockerfile(path), { service: "auth" });

  it("refuses an image that runs as root", () => {
    expect(check(fixture("user-root.Dockerfile"))).toEqual(
      expect.arrayContaining([expect.stringMatching(/runs as root \(USER root\)/)]),
    );
  });

  it("refuses a COPY whose source is not in the repository", () => {
    expect(check(fixture("missing-copy.Dockerfile"))).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/COPY services\/auth\/migrations: no such file in the repository/),
      ]),
    );
  });

  it("refuses a CMD that runs TypeScript through tsx", () => {
    const problems = check(fixture("tsx-cmd.Dockerfile"));
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/runs TypeScript \(npx tsx services\/auth\/src\/main\.ts\)/),
        expect.stringMatching(/runs "npx", not node/),
        expect.stringMatching(/gets TypeScript sources/),
      ]),
    );
  });

  // Variations of the real auth Dockerfile, each breaking one rule.
  const auth = readFileSync(dockerfilePath("auth"), "utf8");
  const mutated = (from: string | RegExp, to: string) => {
    const text = auth.replace(from, to);
    expect(text, `the mutation ${from} changes the Dockerfile`).not.toBe(auth);
    return checkDockerfile(parseDockerfile("mutated.Dockerfile", text), { service: "auth" });
  };
  it.each([
    [
      "an old Node.js",
      /node:24\.21\.0-trixie-slim/,
      "node:20.19-bookworm-slim",
      /past its end of life/,
    ],
    ["an odd (non-LTS) Node.js", /node:24\.21\.0-trixie-slim/, "node:25.1-slim", /not an LTS line/],
    [
      "a moving major tag",
      /node:24\.21\.0-trixie-slim/,
      "node:24-slim",
      /pin at least major\.minor/,
    ],
    [
      "a non-Node base",
      /node:24\.21\.0-trixie-slim/,
      "debian:13-slim",
      /not an official Node\.js image/,
    ],
    [
      "a user name",
      /USER 1000:1000\nEXPOSE 8080\nENTRYPOINT \[\]\nCMD \["node", "services/,
      'USER node\nEXPOSE 8080\nENTRYPOINT []\nCMD ["node", "services/',
      /numeric uid/,
    ],
    [
      "no USER",
      /USER 1000:1000\nEXPOSE 8080\nENTRYPOINT \[\]\nCMD \["node", "services/,
      'EXPOSE 8080\nENTRYPOINT []\nCMD ["node", "services/',
      /sets no USER/,
    ],
    [
      "a shell-form CMD",
      /CMD \["node", "services\/auth\/dist\/main\.js"\]/,
      "CMD node services/auth/dist/main.js",
      /shell form/,
    ],
    [
      "an inherited entrypoint",
      /ENTRYPOINT \[\]\nCMD \["node", "services/,
      'CMD ["node", "services/',
      /inherits ENTRYPOINT/,
    ],
    [
      "npm start",
      /CMD \["node", "services\/auth\/dist\/main\.js"\]/,
      'CMD ["npm", "start", "--workspace", "services/auth"]',
      /not node/,
    ],
    [
      "a CMD on a file the build does not make",
      /CMD \["node", "services\/auth\/dist\/main\.js"\]/,
      'CMD ["node", "services/auth/dist/server.js"]',
      /not there after npm run build/,
    ],
    [
      "a COPY of an ignored path",
      /COPY config\/subscriptions\.yaml config\/\nUSER/,
      "COPY config/subscriptions.yaml config/\nCOPY bench bench\nUSER",
      /COPY bench: excluded from the build context by \.dockerignore/,
    ],
    [
      "dev dependencies in the image",
      "npm ci --omit=dev --workspace",
      "npm ci --workspace",
      /add --omit=dev/,
    ],
    [
      "an install of every workspace",
      "npm ci --omit=dev --workspace services/auth",
      "npm ci --omit=dev",
      /install only this service's workspace/,
    ],
    [
      "a workspace missing for npm ci",
      /COPY packages\/platform\/package\.json packages\/platform\/\nCOPY services\/auth\/package\.json services\/auth\/\n# Only/,
      "COPY services/auth/package.json services/auth/\n# Only",
      /without packages\/platform\/package\.json/,
    ],
    ["no NODE_ENV", "ENV NODE_ENV=production\n", "", /NODE_ENV=production/],
    [
      "no EXPOSE",
      /USER 1000:1000\nEXPOSE 8080\nENTRYPOINT \[\]\nCMD \["node", "services/,
      'USER 1000:1000\nENTRYPOINT []\nCMD ["node", "services/',
      /EXPOSE 8080/,
    ],
  ] as [string, string | RegExp, string, RegExp][])("refuses %s", (_name, from, to, message) => {
    expect(mutated(from, to)).toEqual(expect.arrayContaining([expect.stringMatching(message)]));
  });
});

describe(".dockerignore", () => {
  const rules = readDockerignore();

  it("keeps what the host installs and builds out of the context", () => {
    for (const path of [
      "node_modules/pino/index.js",
      "packages/platform/node_modules/@opentelemetry/core/package.json",
      "services/auth/dist/main.js",
      "packages/platform/dist/index.js",
      "services/auth/tsconfig.build.tsbuildinfo",
      ".data/auth/PG_VERSION",
      ".git/HEAD",
      ".env",
      "services/auth/test/service.test.ts",
      "test/system/start.test.ts",
      "kustomize/base/auth.yaml",
    ]) {
      expect(isIgnored(path, rules), path).toBe(true);
    }
  });

  it("keeps what the images are built from", () => {
    for (const path of [
      "package.json",
      "package-lock.json",
      ".npmrc",
      "tsconfig.base.json",
      "config/subscriptions.yaml",
      "packages/contracts/gen/registry.js",
      "packages/platform/src/service.ts",
      "services/auth/src/main.ts",
      "services/auth/drizzle/0000_init.sql",
      "services/catalog/seed/products.json",
    ]) {
      expect(isIgnored(path, rules), path).toBe(false);
    }
  });

  it("matches the way Docker does: **, *, ?, parents, and ! exceptions", () => {
    const custom = parseIgnoreRules("# comment\n**/dist\n/docs\n*.md\n!README.md\nlog?.txt\n");
    expect(isIgnored("a/b/dist/x.js", custom)).toBe(true);
    expect(isIgnored("dist", custom)).toBe(true);
    expect(isIgnored("distance/x", custom)).toBe(false);
    expect(isIgnored("docs/a/b.txt", custom)).toBe(true);
    expect(isIgnored("sub/docs/b.txt", custom)).toBe(false);
    expect(isIgnored("CHANGES.md", custom)).toBe(true);
    expect(isIgnored("README.md", custom)).toBe(false);
    expect(isIgnored("sub/CHANGES.md", custom)).toBe(false);
    expect(isIgnored("log1.txt", custom)).toBe(true);
    expect(isIgnored("log12.txt", custom)).toBe(false);
  });
});
