/**
 * Envoy's outlier detection (source/extensions/clusters/common/outlier_detection_impl.cc) as
 * Istio configures it. Per endpoint: consecutive 5xx (5xx answers and local-origin failures
 * such as connect failures, resets and timeouts, which Envoy maps to 5xx when local and
 * external errors are not split) and, only when consecutiveGatewayErrors is set, consecutive
 * gateway errors (502/503/504 and local-origin failures); any other answer resets the counts.
 * Reaching a threshold ejects the endpoint at once for baseEjectionTime × its ejection count
 * (capped at 300 s); ejections end at the interval timer's ticks, and each tick the endpoint
 * spends healthy takes one from its ejection count. With splitExternalLocalOriginErrors the
 * local-origin failures count apart (consecutiveLocalOriginFailures) and only answers count as
 * 5xx or gateway errors; a local-origin success (a request placed on an established connection,
 * Envoy's onPoolReady) resets that count, so in practice only failures to connect add up.
 * maxEjectionPercent: an endpoint is ejected only while (ejected + 1) / endpoints stays within
 * it (Envoy ≥ 1.28 with always_eject_one_host unset, as Istio leaves it), so with one endpoint
 * and less than 100 % nothing is ever ejected. Istio sets the panic threshold to 0, so with
 * every endpoint ejected healthy() is [] and the caller answers 503 with flag UH.
 */
import type { OutlierPolicy } from "./destinations.js";

interface Monitor {
  consecutive5xx: number;
  consecutiveGateway: number;
  consecutiveLocalOrigin: number;
  ejectedAt?: number;
  ejections: number;
}

export class OutlierDetector {
  readonly #monitors = new Map<string, Monitor>();
  #nextTick: number;

  constructor(
    readonly policy: OutlierPolicy,
    readonly now: () => number = () => Date.now(),
  ) {
    this.#nextTick = now() + policy.intervalMs;
  }

  record(
    endpointId: string,
    result: { status?: number; localOriginFailure?: boolean; localOriginSuccess?: boolean },
  ): void {
    this.#tick();
    const monitor = this.#monitor(endpointId);
    if (result.localOriginSuccess) {
      // Envoy: LocalOriginConnectSuccess maps to no HTTP code without the split.
      if (this.policy.splitExternalLocalOriginErrors) monitor.consecutiveLocalOrigin = 0;
      return;
    }
    const local = result.localOriginFailure === true;
    const status = result.status;
    const { consecutive5xxErrors, consecutiveGatewayErrors } = this.policy;
    if (this.policy.splitExternalLocalOriginErrors) {
      if (local) {
        monitor.consecutiveLocalOrigin++;
        const threshold = this.policy.consecutiveLocalOriginFailures ?? 5;
        if (threshold > 0 && monitor.consecutiveLocalOrigin >= threshold) this.#eject(monitor);
        return;
      }
      // An answer leaves the local-origin count alone (Envoy's putHttpResponseCode): the
      // success was recorded when the request got its connection.
    }
    const counted = local && !this.policy.splitExternalLocalOriginErrors;
    const is5xx = counted || (status !== undefined && status >= 500 && status <= 599);
    const isGateway = counted || status === 502 || status === 503 || status === 504;
    monitor.consecutive5xx = is5xx ? monitor.consecutive5xx + 1 : 0;
    monitor.consecutiveGateway = isGateway ? monitor.consecutiveGateway + 1 : 0;
    if (consecutive5xxErrors > 0 && monitor.consecutive5xx >= consecutive5xxErrors) {
      this.#eject(monitor);
    } else if (consecutiveGatewayErrors && monitor.consecutiveGateway >= consecutiveGatewayErrors) {
      this.#eject(monitor);
    }
  }

  isEjected(endpointId: string): boolean {
    this.#tick();
    return this.#monitors.get(endpointId)?.ejectedAt !== undefined;
  }

  /**
   * The endpoints not ejected, in the order given; [] when all are (panic threshold 0). The
   * list is the cluster's membership (EDS): as in Envoy, an endpoint no longer in it loses its
   * outlier state, so one that leaves and comes back (a restarted pod) starts healthy.
   */
  healthy(endpointIds: string[]): string[] {
    this.#tick();
    const members = new Set(endpointIds);
    for (const id of this.#monitors.keys()) if (!members.has(id)) this.#monitors.delete(id);
    for (const id of endpointIds) this.#monitor(id);
    return endpointIds.filter((id) => this.#monitors.get(id)?.ejectedAt === undefined);
  }

  /** How many times an endpoint has been ejected, minus the healthy intervals since. */
  ejections(endpointId: string): number {
    this.#tick();
    return this.#monitors.get(endpointId)?.ejections ?? 0;
  }

  #monitor(id: string): Monitor {
    let monitor = this.#monitors.get(id);
    if (!monitor) {
      monitor = {
        consecutive5xx: 0,
        consecutiveGateway: 0,
        consecutiveLocalOrigin: 0,
        ejections: 0,
      };
      this.#monitors.set(id, monitor);
    }
    return monitor;
  }

  #eject(monitor: Monitor) {
    monitor.consecutive5xx = 0;
    monitor.consecutiveGateway = 0;
    monitor.consecutiveLocalOrigin = 0;
    if (monitor.ejectedAt !== undefined) return;
    const ejected = [...this.#monitors.values()].filter((m) => m.ejectedAt !== undefined).length;
    const percentAfter = (100 * (ejected + 1)) / this.#monitors.size;
    if (percentAfter > this.policy.maxEjectionPercent) return;
    monitor.ejectedAt = this.now();
    const cap = Math.max(this.policy.maxEjectionTimeMs, this.policy.baseEjectionTimeMs);
    // Envoy raises the multiplier only while base × multiplier is under the cap.
    if (this.policy.baseEjectionTimeMs * monitor.ejections < cap) monitor.ejections++;
  }

  /** The interval timer's ticks up to now (run lazily: the class is pure). */
  #tick() {
    const now = this.now();
    while (now >= this.#nextTick) {
      const tick = this.#nextTick;
      for (const monitor of this.#monitors.values()) {
        if (monitor.ejectedAt !== undefined) {
          const duration = Math.min(
            this.policy.baseEjectionTimeMs * monitor.ejections,
            Math.max(this.policy.maxEjectionTimeMs, this.policy.baseEjectionTimeMs),
          );
          if (tick - monitor.ejectedAt >= duration) monitor.ejectedAt = undefined;
        } else if (monitor.ejections > 0) {
          monitor.ejections--;
        }
      }
      this.#nextTick += this.policy.intervalMs;
    }
  }
}
