import { existsSync, readFileSync } from "node:fs";
import { join, posix } from "node:path";
import { describe, expect, it } from "vitest";
import {
  checkDockerfile,
  contextFiles,
  imageArgv,
  imageConfig,
  isIgnored,
  parseDockerfile,
  parseIgnoreRules,
  readDockerignore,
  repoRoot,
  serviceBuildArgs,
  serviceDockerfile,
  serviceDockerfilePath,
  servicesWithImages,
} from "./dockerfile.js";
import { imageContentProblems, stageFilesystem } from "./image.js";

const services = servicesWithImages();
const fixture = (name: string) => join(repoRoot, "test/images/fixtures", name);

describe("every service has an image", () => {
  it("builds each folder under services/ with a package.json from the one Dockerfile", () => {
    expect(existsSync(serviceDockerfilePath)).toBe(true);
    expect(services).toEqual(expect.arrayContaining(["auth", "catalog", "order", "payment"]));
    for (const service of services) {
      // A Dockerfile of its own would be a second, drifting definition of the image.
      expect(existsSync(join(repoRoot, "services", service, "Dockerfile")), service).toBe(false);
    }
  });
});

describe.each(services)("the Dockerfile with --build-arg SERVICE=%s", (service) => {
  const dockerfile = serviceDockerfile(service);

  it("passes every image check", () => {
    expect(dockerfile.errors).toEqual([]);
    expect(checkDockerfile(dockerfile, { service })).toEqual([]);
  });

  it("runs the service's compiled entry point with node as a non-root uid, from its folder", () => {
    const config = imageConfig(dockerfile.stages.at(-1)!);
    expect(imageArgv(config)).toEqual(["node", "dist/main.js"]);
    expect(config.workdir).toBe(`/app/services/${service}`);
    expect(config.user).toMatch(/^[1-9]\d*(:\d+)?$/);
    expect(config.labels).toMatchObject({
      "org.opencontainers.image.title": `thinmesh-${service}`,
      "org.opencontainers.image.description": `thinmesh ${service} service`,
    });
  });

  it("has a dev stage for tilt up that also runs as the service's uid", () => {
    const dev = dockerfile.stages.find((s) => s.name === "dev");
    expect(dev, "a stage named dev (the Tiltfile builds target='dev')").toBeDefined();
    const config = imageConfig(dev!);
    expect(config.user).toBe("1000:1000");
    expect(imageArgv(config)).toEqual(["node", "--watch", "dist/main.js"]);
    expect(config.workdir).toBe(`/app/services/${service}`);
  });

  it("puts every run-time file of the service's folder in the image, and no source or tooling", () => {
    const image = stageFilesystem(dockerfile, dockerfile.stages.at(-1)!);
    const folder = `services/${service}`;
    const runtimeFiles = contextFiles(folder, readDockerignore()).filter(
      (file) =>
        !/^(src|test)\/|^tsconfig.*\.json$|\.config\.ts$/.test(posix.relative(folder, file)),
    );
    expect(runtimeFiles).toEqual(
      expect.arrayContaining([`${folder}/package.json`, `${folder}/drizzle/meta/_journal.json`]),
    );
    for (const file of runtimeFiles) {
      expect(image.get(`/app/${file}`), file).toEqual({ kind: "file", from: file });
    }
    expect(image.has(`/app/${folder}/dist/main.js`)).toBe(true);
    expect(imageContentProblems(dockerfile)).toEqual([]);
  });
});

describe("the Dockerfile reads its build arguments the way Docker does", () => {
  const text = [
    "ARG BASE=node:24.21-slim",
    "ARG NAME=global",
    `FROM \${BASE} AS first`,
    "RUN echo before $NAME",
    "ARG NAME",
    `ARG OTHER=x\${NAME}`,
    `ENV HOMEDIR=/home/\${NAME}`,
    `COPY \${NAME}/a \${HOMEDIR}/`,
    `RUN echo \${NAME} $OTHER $HOME '$NAME'`,
    `LABEL a="\${NAME:-fallback}" b="\${UNSET:-fallback}" c="\${NAME:+set}"`,
    "WORKDIR /srv/$NAME",
    `CMD ["echo", "\${NAME}", "$HOMEDIR"]`,
    "FROM first AS second",
    `WORKDIR \${HOMEDIR}/w`,
    "ARG OTHER=y",
    "ENV OTHER=from-env",
    `USER \${OTHER}`,
    "CMD echo $NAME",
  ].join("\n");
  const read = (buildArgs?: Record<string, string>) =>
    parseDockerfile("args.Dockerfile", { text, buildArgs });
  const instruction = (stage: number, keyword: string, index = 0) =>
    read().stages[stage]!.instructions.filter((i) => i.keyword === keyword)[index]!;

  it("gives a global ARG to FROM only, and to a stage that declares it again", () => {
    const dockerfile = read();
    expect(dockerfile.stages[0]!.from).toBe("node:24.21-slim");
    expect(dockerfile.stages[0]!.args).toEqual({ NAME: "global", OTHER: "xglobal" });
    expect(dockerfile.errors).toEqual([
      expect.stringMatching(/^line 4: \$\{NAME\} is not declared in this stage.*add ARG NAME/),
    ]);
  });

  it("substitutes in COPY, ENV, LABEL, WORKDIR and USER, and in RUN as its shell would", () => {
    expect(instruction(0, "COPY").args).toBe("global/a /home/global/");
    expect(instruction(0, "RUN", 1).args).toBe("echo global xglobal $HOME '$NAME'");
    expect(imageConfig(read().stages[0]!)).toMatchObject({
      workdir: "/srv/global",
      env: { HOMEDIR: "/home/global" },
      labels: { a: "global", b: "fallback", c: "set" },
    });
  });

  it("leaves CMD as written: the exec form is not substituted, the shell form is the container's", () => {
    expect(instruction(0, "CMD").json).toEqual(["echo", `\${NAME}`, "$HOMEDIR"]);
    expect(instruction(1, "CMD").args).toBe("echo $NAME");
  });

  it("lets a --build-arg win over the defaults, and an ENV over an ARG", () => {
    const dockerfile = read({ NAME: "cli", BASE: "node:22.1-slim" });
    expect(dockerfile.stages[0]!.from).toBe("node:22.1-slim");
    expect(dockerfile.stages[0]!.args.NAME).toBe("cli");
    const second = imageConfig(dockerfile.stages[1]!);
    // The ENV of the stage it starts from carries over; its ARGs do not.
    expect(second.workdir).toBe("/home/cli/w");
    expect(second.user).toBe("from-env");
    expect(dockerfile.stages[1]!.args).toEqual({ OTHER: "y" });
  });

  it("reports an ARG without a value and a --build-arg nothing declares", () => {
    expect(parseDockerfile(serviceDockerfilePath).errors).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /\$\{SERVICE\} is empty: ARG SERVICE has no value \(pass --build-arg SERVICE=/,
        ),
      ]),
    );
    const typo = parseDockerfile(serviceDockerfilePath, {
      buildArgs: { ...serviceBuildArgs("auth"), SERVCE: "auth" },
    });
    expect(typo.errors).toEqual([expect.stringMatching(/--build-arg SERVCE: no ARG SERVCE/)]);
  });
});

describe("the checks fail on broken Dockerfiles", () => {
  const check = (path: string) =>
    checkDockerfile(parseDockerfile(path, { buildArgs: serviceBuildArgs("auth") }), {
      service: "auth",
    });

  it("refuses an image that runs as root", () => {
    expect(check(fixture("user-root.Dockerfile"))).toEqual([
      expect.stringMatching(/runs as root \(USER root\)/),
    ]);
  });

  it("refuses a COPY whose source is not in the repository", () => {
    expect(check(fixture("missing-copy.Dockerfile"))).toEqual([
      expect.stringMatching(/COPY services\/auth\/migrations: no such file in the repository/),
    ]);
  });

  it("refuses a CMD that runs TypeScript through tsx", () => {
    const problems = check(fixture("tsx-cmd.Dockerfile"));
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/runs TypeScript \(npx tsx src\/main\.ts\)/),
        expect.stringMatching(/runs "npx", not node/),
        expect.stringMatching(/gets TypeScript sources \(services\/auth\/src\)/),
      ]),
    );
    const dockerfile = parseDockerfile(fixture("tsx-cmd.Dockerfile"), {
      buildArgs: serviceBuildArgs("auth"),
    });
    expect(imageContentProblems(dockerfile)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/holds \/app\/services\/auth\/src\/main\.ts \(TypeScript source/),
      ]),
    );
  });

  it(`refuses a stage that uses \${SERVICE} without declaring it`, () => {
    expect(check(fixture("arg-scope.Dockerfile"))).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /^line 16: \$\{SERVICE\} is not declared in this stage, so Docker makes it empty: add ARG SERVICE after its FROM/,
        ),
        expect.stringMatching(/label org\.opencontainers\.image\.title is "thinmesh-"/),
      ]),
    );
  });

  // Variations of the real Dockerfile read for auth, each breaking one rule.
  const original = readFileSync(serviceDockerfilePath, "utf8");
  const variation = (from: string | RegExp, to: string) => {
    const text = original.replace(from, to);
    expect(text, `the mutation ${from} changes the Dockerfile`).not.toBe(original);
    return serviceDockerfile("auth", text);
  };
  const mutated = (from: string | RegExp, to: string) =>
    checkDockerfile(variation(from, to), { service: "auth" });

  it("refuses an image that holds the service's sources", () => {
    expect(
      imageContentProblems(variation("RUN rm -rf src test tsconfig*.json *.config.ts\n", "")),
    ).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/holds \/app\/services\/auth\/src\/main\.ts \(TypeScript source/),
        expect.stringMatching(/holds \/app\/services\/auth\/tsconfig\.build\.json/),
        expect.stringMatching(/holds \/app\/services\/auth\/drizzle\.config\.ts/),
      ]),
    );
  });

  it("refuses the image of one service checked as another's", () => {
    expect(checkDockerfile(serviceDockerfile("catalog"), { service: "auth" })).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/WORKDIR is \/app\/services\/catalog/),
        expect.stringMatching(/title is "thinmesh-catalog"; name the service: thinmesh-auth/),
      ]),
    );
  });

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
      /USER 1000:1000\nEXPOSE 8080\nWORKDIR \/app\/services\/\$\{SERVICE\}\nENTRYPOINT \[\]\nCMD \["node", "dist/,
      `USER node\nEXPOSE 8080\nWORKDIR /app/services/\${SERVICE}\nENTRYPOINT []\nCMD ["node", "dist`,
      /numeric uid/,
    ],
    [
      "no USER",
      /USER 1000:1000\nEXPOSE 8080\nWORKDIR \/app\/services\/\$\{SERVICE\}\nENTRYPOINT \[\]\nCMD \["node", "dist/,
      `EXPOSE 8080\nWORKDIR /app/services/\${SERVICE}\nENTRYPOINT []\nCMD ["node", "dist`,
      /sets no USER/,
    ],
    ["a shell-form CMD", /CMD \["node", "dist\/main\.js"\]/, "CMD node dist/main.js", /shell form/],
    [
      "an inherited entrypoint",
      /ENTRYPOINT \[\]\nCMD \["node", "dist/,
      'CMD ["node", "dist',
      /inherits ENTRYPOINT/,
    ],
    ["npm start", /CMD \["node", "dist\/main\.js"\]/, 'CMD ["npm", "start"]', /not node/],
    [
      "a CMD on a file the build does not make",
      /CMD \["node", "dist\/main\.js"\]/,
      'CMD ["node", "dist/server.js"]',
      /not there after npm run build \(services\/auth\/dist\/server\.js\)/,
    ],
    [
      "a CMD on another service's code",
      /CMD \["node", "dist\/main\.js"\]/,
      'CMD ["node", "../catalog/dist/main.js"]',
      /runs services\/catalog\/dist\/main\.js, not the auth service's compiled code/,
    ],
    [
      "an image run from /app",
      /USER 1000:1000\nEXPOSE 8080\nWORKDIR \/app\/services\/\$\{SERVICE\}\nENTRYPOINT \[\]\nCMD \["node", "dist/,
      'USER 1000:1000\nEXPOSE 8080\nENTRYPOINT []\nCMD ["node", "dist',
      /WORKDIR is \/app; run from the service's folder \/app\/services\/auth/,
    ],
    [
      "a label that does not name the service",
      `title="thinmesh-\${SERVICE}"`,
      'title="thinmesh"',
      /title is "thinmesh"; name the service: thinmesh-auth/,
    ],
    [
      "a stage that forgets its ARG SERVICE",
      /FROM \$\{NODE_IMAGE\} AS runtime\nARG SERVICE\n/,
      `FROM \${NODE_IMAGE} AS runtime\n`,
      /\$\{SERVICE\} is not declared in this stage, so Docker makes it empty: add ARG SERVICE/,
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
      `npm ci --omit=dev --workspace services/\${SERVICE}`,
      "npm ci --omit=dev",
      /install only this service's workspace/,
    ],
    [
      "a workspace missing for npm ci",
      "COPY packages/platform/package.json packages/platform/\n",
      "",
      /stage deps runs npm ci without packages\/platform\/package\.json \(a workspace services\/auth depends on\)/,
    ],
    [
      "an install that leaves the dependencies unpatched",
      "\n    && npx --yes patch-package@8.0.1 --error-on-fail \\",
      "",
      /stage deps installs with --ignore-scripts but does not apply patches\//,
    ],
    ["no NODE_ENV", "ENV NODE_ENV=production\n", "", /NODE_ENV=production/],
    [
      "no EXPOSE",
      /USER 1000:1000\nEXPOSE 8080\nWORKDIR \/app\/services\/\$\{SERVICE\}\nENTRYPOINT \[\]\nCMD \["node", "dist/,
      `USER 1000:1000\nWORKDIR /app/services/\${SERVICE}\nENTRYPOINT []\nCMD ["node", "dist`,
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
