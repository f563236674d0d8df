/**
 * Istio's HTTPFaultInjection as Envoy's fault filter applies it on the caller's sidecar: the
 * delay (fixedDelay) first, then the abort (httpStatus), each for its `percentage` of requests;
 * an unset percentage injects nothing (Istio sends 0%). An injected abort answers the status with
 * body "fault filter abort" and flag FI (a delay is flagged DI); the injecting hop does not retry
 * its own abort. Not implemented (refused at load): grpcStatus, http2Error, exponentialDelay.
 */
import { durationMs, type HttpFault } from "./config.js";

export type FaultPolicy = HttpFault;

export interface FaultChoice {
  delayMs?: number;
  abort?: { status: number };
}

export const FAULT_ABORT_BODY = "fault filter abort";

const applies = (percentage: { value: number } | undefined, random: () => number) =>
  percentage !== undefined && random() * 100 < percentage.value;

export function chooseFault(
  fault: FaultPolicy | undefined,
  random: () => number = Math.random,
): FaultChoice {
  const choice: FaultChoice = {};
  if (!fault) return choice;
  if (fault.delay && applies(fault.delay.percentage, random)) {
    choice.delayMs = durationMs(fault.delay.fixedDelay);
  }
  if (fault.abort && applies(fault.abort.percentage, random)) {
    choice.abort = { status: fault.abort.httpStatus };
  }
  return choice;
}
