// The documentation stands on its own: every relative link in a tracked Markdown file leads to
// a file of the repository, and a #fragment to a heading of that file (GitHub's anchors).
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./dockerfile.js";

const markdownFiles = execFileSync("git", ["ls-files", "*.md"], { cwd: repoRoot, encoding: "utf8" })
  .split("\n")
  .filter((file) => file && !file.includes("node_modules/"));

/** GitHub's anchors for a file's headings: lower case, punctuation dropped, spaces to "-". */
function anchorsOf(text: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  const withoutCode = text.replace(/^```[\s\S]*?^```/gm, "");
  for (const [, heading] of withoutCode.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = heading!
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .replace(/\s/g, "-");
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count ? `${base}-${count}` : base);
  }
  return anchors;
}

/** Relative links of a Markdown text ([text](target) and <a href>), outside code. */
function relativeLinks(text: string): string[] {
  const prose = text.replace(/^```[\s\S]*?^```/gm, "").replace(/`[^`\n]*`/g, "");
  return [...prose.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)|href="([^"]+)"/g)]
    .map((m) => (m[1] ?? m[2])!)
    .filter((target) => !/^[a-z][a-z+.-]*:/i.test(target));
}

describe("the documentation's links", () => {
  it.each(markdownFiles)("%s: every relative link resolves", (file) => {
    const text = readFileSync(join(repoRoot, file), "utf8");
    const broken: string[] = [];
    for (const link of relativeLinks(text)) {
      const [path, fragment] = link.split("#") as [string, string | undefined];
      const target = path
        ? join(repoRoot, dirname(file), decodeURIComponent(path))
        : join(repoRoot, file);
      if (!existsSync(target) || relative(repoRoot, target).startsWith("..")) {
        broken.push(`${link} (no such file in the repository)`);
        continue;
      }
      if (fragment && statSync(target).isFile() && target.endsWith(".md")) {
        if (!anchorsOf(readFileSync(target, "utf8")).has(fragment)) {
          broken.push(`${link} (no heading #${fragment})`);
        }
      }
    }
    expect(broken).toEqual([]);
  });
});
