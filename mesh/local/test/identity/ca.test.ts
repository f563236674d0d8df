import "reflect-metadata";
import { X509Certificate as NodeX509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as x509 from "@peculiar/x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  issueWorkloadCertificate,
  loadOrCreateCa,
  type MeshCa,
  spiffeIdOfCertificate,
} from "../../src/identity/ca.js";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "thinmesh-ca-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("loadOrCreateCa", () => {
  it("creates a dev-only ECDSA P-256 root valid for 10 years, key file 0600, and reuses it", async () => {
    const dir = path.join(root, "persist", "mesh-ca");
    const first = await loadOrCreateCa(dir);
    expect(first.created).toBe(true);
    expect(first.subject).toMatch(/DEV ONLY/);

    const keyMode = (await stat(path.join(dir, "ca-key.pem"))).mode & 0o777;
    expect(keyMode).toBe(0o600);
    const certPem = await readFile(path.join(dir, "ca-cert.pem"), "utf8");
    expect(certPem).toBe(first.certPem);

    const cert = new NodeX509Certificate(certPem);
    expect(cert.ca).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    const years = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / (365.25 * 86_400_000);
    expect(years).toBeCloseTo(10, 1);
    const keyUsage = new x509.X509Certificate(certPem).getExtension(x509.KeyUsagesExtension);
    expect(keyUsage?.usages).toBe(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);

    const second = await loadOrCreateCa(dir);
    expect(second.created).toBe(false);
    expect(second.certPem).toBe(first.certPem);
    // The reloaded key still signs certificates that verify against the persisted root.
    const workload = await issueWorkloadCertificate(second, {
      spiffeId: "spiffe://cluster.local/ns/shop/sa/order",
    });
    expect(new NodeX509Certificate(workload.certPem).verify(cert.publicKey)).toBe(true);
  });

  it("refuses a folder with a certificate but no key, or a key that is not the certificate's", async () => {
    const dir = path.join(root, "broken");
    await loadOrCreateCa(dir);
    await rm(path.join(dir, "ca-key.pem"));
    await expect(loadOrCreateCa(dir)).rejects.toThrow(
      /ca-key\.pem is missing; delete .* to create a new CA/,
    );

    const other = await loadOrCreateCa(path.join(root, "other"));
    await writeFile(
      path.join(dir, "ca-key.pem"),
      await readFile(path.join(other.dir, "ca-key.pem")),
    );
    await expect(loadOrCreateCa(dir)).rejects.toThrow(/ca-key\.pem is not the key of ca-cert\.pem/);

    await writeFile(path.join(dir, "ca-cert.pem"), "not a certificate");
    await expect(loadOrCreateCa(dir)).rejects.toThrow(/ca-cert\.pem is not a PEM certificate/);
  });
});

describe("issueWorkloadCertificate", () => {
  let ca: MeshCa;
  beforeAll(async () => {
    ca = await loadOrCreateCa(path.join(root, "issuer"));
  });

  it("issues an Istio-shaped certificate: empty subject, the SPIFFE id as critical URI SAN, server+client auth, 24 h", async () => {
    const spiffeId = "spiffe://cluster.local/ns/shop/sa/order";
    const issued = await issueWorkloadCertificate(ca, { spiffeId });
    expect(issued.spiffeId).toBe(spiffeId);
    expect(issued.caPem).toBe(ca.certPem);

    const cert = new x509.X509Certificate(issued.certPem);
    expect(cert.subject).toBe("");
    expect(cert.issuer).toBe(ca.subject);
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
    expect(san?.critical).toBe(true);
    expect(san?.names.items.map((name) => [name.type, name.value])).toEqual([["url", spiffeId]]);
    expect(spiffeIdOfCertificate(new Uint8Array(cert.rawData))).toBe(spiffeId);
    expect(cert.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    expect(cert.getExtension(x509.KeyUsagesExtension)?.usages).toBe(
      x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
    );
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([
      x509.ExtendedKeyUsage.serverAuth,
      x509.ExtendedKeyUsage.clientAuth,
    ]);
    // Istio's ClockSkewGracePeriod: valid from 2 min before issue.
    const backdated = Date.now() - cert.notBefore.getTime();
    expect(backdated).toBeGreaterThanOrEqual(119_000);
    expect(backdated).toBeLessThan(125_000);
    const hours = (issued.notAfter.getTime() - Date.now()) / 3_600_000;
    expect(hours).toBeGreaterThan(23.9);
    expect(hours).toBeLessThanOrEqual(24);
    expect(cert.notAfter.getTime()).toBe(Math.floor(issued.notAfter.getTime() / 1000) * 1000);

    const shortLived = await issueWorkloadCertificate(ca, { spiffeId, ttlHours: 1 });
    expect((shortLived.notAfter.getTime() - Date.now()) / 3_600_000).toBeLessThanOrEqual(1);
  });

  it("issues a fresh key and certificate on every call (rotated on restart)", async () => {
    const spiffeId = "spiffe://cluster.local/ns/shop/sa/payment";
    const a = await issueWorkloadCertificate(ca, { spiffeId });
    const b = await issueWorkloadCertificate(ca, { spiffeId });
    expect(a.keyPem).not.toBe(b.keyPem);
    expect(a.certPem).not.toBe(b.certPem);
    const publicKey = (pem: string) =>
      new NodeX509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
    expect(publicKey(a.certPem).equals(publicKey(b.certPem))).toBe(false);
    expect(new NodeX509Certificate(a.certPem).serialNumber).not.toBe(
      new NodeX509Certificate(b.certPem).serialNumber,
    );
  });

  it("refuses what is not a SPIFFE id and lifetimes Istio's CA would refuse", async () => {
    for (const spiffeId of [
      "order",
      "https://cluster.local/ns/shop/sa/order",
      "spiffe://cluster.local",
      "spiffe://Cluster.local/ns/shop",
      "spiffe://cluster.local/ns/../sa/x",
    ]) {
      await expect(issueWorkloadCertificate(ca, { spiffeId })).rejects.toThrow(
        /is not a SPIFFE id/,
      );
    }
    const spiffeId = "spiffe://cluster.local/ns/shop/sa/order";
    for (const ttlHours of [0, -1, Number.NaN, 91 * 24]) {
      await expect(issueWorkloadCertificate(ca, { spiffeId, ttlHours })).rejects.toThrow(
        /ttlHours must be/,
      );
    }
  });
});
