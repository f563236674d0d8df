// @peculiar/x509 resolves its ASN.1 types through tsyringe, which needs the Reflect metadata API
// loaded first (the library's README says so; ES modules evaluate imports in this order).
import "reflect-metadata";
import { createPublicKey, randomBytes, webcrypto } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import * as x509 from "@peculiar/x509";

// @peculiar/x509 signs with globalThis.crypto, which is Node's WebCrypto (crypto.webcrypto).
type CryptoKey = webcrypto.CryptoKey;

/** The local root of trust: what istiod's CA (Citadel) is in a cluster. */
export interface MeshCa {
  certPem: string;
  subject: string;
  notAfter: Date;
  /** True when this call created the CA (first start), false when it was read from its folder. */
  created: boolean;
  /** Where ca-key.pem and ca-cert.pem live. */
  dir: string;
  /** Signs workload certificates; never leaves the process except as ca-key.pem. */
  readonly signingKey: CryptoKey;
}

/** A workload's identity, as Istio's agent would hand it to the sidecar over SDS. */
export interface WorkloadCertificate {
  spiffeId: string;
  keyPem: string;
  certPem: string;
  /** The root the peers' certificates are verified against. */
  caPem: string;
  notAfter: Date;
}

const caKeyFile = "ca-key.pem";
const caCertFile = "ca-cert.pem";
const caSubject = "CN=thinmesh mesh/local dev CA - DEV ONLY do not trust,O=cluster.local";
const caLifetimeYears = 10;
const ecdsa = { name: "ECDSA", namedCurve: "P-256" } as const;
const signingAlgorithm = { name: "ECDSA", hash: "SHA-256" } as const;
/** Istio's default workload certificate TTL (its agent's SECRET_TTL). */
const defaultTtlHours = 24;
/** Istio's CA refuses longer workload certificates (its max-workload-cert-ttl default, 90 days). */
const maxTtlHours = 90 * 24;
/**
 * Certificates start a little in the past, so a peer whose clock runs behind accepts them:
 * Istio's ClockSkewGracePeriod (security/pkg/pki/util/generate_cert.go), 2 min.
 */
const backdateMs = 120_000;

/**
 * The mesh's root CA kept in `dir`: created (ECDSA P-256, 10 years) on first start, read back
 * afterwards so certificates issued before a restart still verify against it.
 */
export async function loadOrCreateCa(dir: string): Promise<MeshCa> {
  const keyPath = path.join(dir, caKeyFile);
  const certPath = path.join(dir, caCertFile);
  const [keyPem, certPem] = await Promise.all([readIfExists(keyPath), readIfExists(certPath)]);
  if (keyPem === undefined && certPem === undefined) return createCa(dir);
  if (keyPem === undefined || certPem === undefined) {
    const missing = keyPem === undefined ? keyPath : certPath;
    throw new Error(
      `the mesh CA in ${dir} is incomplete: ${missing} is missing; delete ${dir} to create a new CA (workload certificates are reissued at every start)`,
    );
  }
  return readCa(dir, keyPem, certPem);
}

async function createCa(dir: string): Promise<MeshCa> {
  const keys = await webcrypto.subtle.generateKey(ecdsa, true, ["sign", "verify"]);
  const notBefore = new Date(Date.now() - backdateMs);
  const notAfter = new Date(notBefore);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + caLifetimeYears);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: caSubject,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const keyPem = x509.PemConverter.encode(
    await webcrypto.subtle.exportKey("pkcs8", keys.privateKey),
    "PRIVATE KEY",
  );
  const certPem = cert.toString("pem");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // The key first: a CA folder with a certificate always has its key.
  await writeAtomically(path.join(dir, caKeyFile), keyPem, 0o600);
  await writeAtomically(path.join(dir, caCertFile), certPem, 0o644);
  return {
    certPem,
    subject: cert.subject,
    notAfter,
    created: true,
    dir,
    signingKey: keys.privateKey,
  };
}

async function readCa(dir: string, keyPem: string, certPem: string): Promise<MeshCa> {
  const where = `the mesh CA in ${dir}`;
  const remedy = `delete ${dir} to create a new CA`;
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(certPem);
  } catch (error) {
    throw new Error(
      `${where}: ${caCertFile} is not a PEM certificate (${message(error)}); ${remedy}`,
    );
  }
  let signingKey: CryptoKey;
  let publicKeyDer: Buffer;
  try {
    signingKey = await webcrypto.subtle.importKey(
      "pkcs8",
      x509.PemConverter.decodeFirst(keyPem),
      ecdsa,
      false,
      ["sign"],
    );
    publicKeyDer = createPublicKey(keyPem).export({ type: "spki", format: "der" });
  } catch (error) {
    throw new Error(
      `${where}: ${caKeyFile} is not a PKCS#8 ECDSA P-256 private key (${message(error)}); ${remedy}`,
    );
  }
  if (!publicKeyDer.equals(Buffer.from(cert.publicKey.rawData))) {
    throw new Error(`${where}: ${caKeyFile} is not the key of ${caCertFile}; ${remedy}`);
  }
  if (cert.notAfter.getTime() <= Date.now()) {
    throw new Error(`${where} expired on ${cert.notAfter.toISOString()}; ${remedy}`);
  }
  return {
    certPem,
    subject: cert.subject,
    notAfter: cert.notAfter,
    created: false,
    dir,
    signingKey,
  };
}

export interface WorkloadCertificateRequest {
  /** spiffe://<trust domain>/ns/<namespace>/sa/<service account>, as Istio names a workload. */
  spiffeId: string;
  /** Lifetime; Istio's default is 24 h. */
  ttlHours?: number;
}

/**
 * A fresh key pair and a certificate for one workload, shaped like the ones Istio's CA issues:
 * empty subject, the SPIFFE id as the only (critical) URI SAN, usable as TLS server and client.
 */
export async function issueWorkloadCertificate(
  ca: MeshCa,
  request: WorkloadCertificateRequest,
): Promise<WorkloadCertificate> {
  const { spiffeId } = request;
  assertSpiffeId(spiffeId);
  const ttlHours = request.ttlHours ?? defaultTtlHours;
  if (!Number.isFinite(ttlHours) || ttlHours <= 0 || ttlHours > maxTtlHours) {
    throw new Error(
      `ttlHours must be a number of hours above 0 and at most ${maxTtlHours} (90 days, Istio's maximum); got ${ttlHours}`,
    );
  }
  const keys = await webcrypto.subtle.generateKey(ecdsa, true, ["sign", "verify"]);
  const notBefore = new Date(Date.now() - backdateMs);
  // A certificate cannot outlive the CA that vouches for it.
  const notAfter = new Date(
    Math.min(notBefore.getTime() + backdateMs + ttlHours * 3_600_000, ca.notAfter.getTime()),
  );
  const caCert = new x509.X509Certificate(ca.certPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: "",
    issuer: caCert.subject,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: ca.signingKey,
    signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
        true,
      ),
      new x509.ExtendedKeyUsageExtension(
        [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
        false,
      ),
      // RFC 5280: with an empty subject the SAN extension must be critical.
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }], true),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  const keyPem = x509.PemConverter.encode(
    await webcrypto.subtle.exportKey("pkcs8", keys.privateKey),
    "PRIVATE KEY",
  );
  return { spiffeId, keyPem, certPem: cert.toString("pem"), caPem: ca.certPem, notAfter };
}

/**
 * The SPIFFE id in a certificate (DER): its first URI SAN with the spiffe scheme, the one Envoy
 * reports and matches (the SPIFFE spec allows exactly one).
 */
export function spiffeIdOfCertificate(der: Uint8Array): string | undefined {
  try {
    const san = new x509.X509Certificate(der).getExtension(x509.SubjectAlternativeNameExtension);
    return san?.names.items.find(
      (name) => name.type === "url" && name.value.startsWith("spiffe://"),
    )?.value;
  } catch {
    return undefined; // not a certificate this parser understands: no identity
  }
}

// SPIFFE ID spec: a lower-case trust domain, then a path of segments of letters, digits, . - _
const spiffeIdPattern = /^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._-]+)+$/;

function assertSpiffeId(spiffeId: string): void {
  if (!spiffeIdPattern.test(spiffeId) || /\/\.{1,2}(\/|$)/.test(spiffeId)) {
    throw new Error(
      `"${spiffeId}" is not a SPIFFE id: expected spiffe://<trust domain>/ns/<namespace>/sa/<service account>, e.g. spiffe://cluster.local/ns/shop/sa/order`,
    );
  }
}

/** A positive 128-bit serial (RFC 5280 allows up to 20 octets; the top bit clear keeps it positive). */
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f;
  return bytes.toString("hex");
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/** Written beside the target and renamed, so a crash never leaves half a PEM behind. */
async function writeAtomically(file: string, content: string, mode: number): Promise<void> {
  const temporary = `${file}.${process.pid}.tmp`;
  await rm(temporary, { force: true }); // left by a crash: "wx" below must create the file
  await writeFile(temporary, content, { mode, flag: "wx" });
  await rename(temporary, file);
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
