/**
 * Keeps the leases of the rows a process is working on alive while it lives: every
 * `renewEveryMs` it extends them all in one call. A process that dies stops renewing, so its
 * rows are free for another one once a short lease runs out, while a live owner keeps a row
 * however long its work takes. (A long lease would do the latter only by making every crash
 * cost the whole lease.)
 */
export interface LeaseKeeper<Key> {
  /** Keep renewing this key's lease (the caller has just taken it). */
  hold(key: Key): void;
  /** Stop renewing it (the work is recorded, or the lease was given up). */
  release(key: Key): void;
  readonly held: ReadonlySet<Key>;
  stop(): void;
}

export interface LeaseKeeperOptions<Key> {
  renewEveryMs: number;
  /** Extends the leases of these keys; keys recorded meanwhile must be left alone. */
  renew(keys: Key[]): Promise<unknown>;
  /** A failed renewal only risks another process doing the work again (at least once). */
  onError(error: unknown): void;
}

export function keepLeases<Key>(options: LeaseKeeperOptions<Key>): LeaseKeeper<Key> {
  const held = new Set<Key>();
  let renewing = false;
  const timer = setInterval(() => {
    if (held.size === 0 || renewing) return;
    renewing = true;
    options
      .renew([...held])
      .catch(options.onError)
      .finally(() => {
        renewing = false;
      });
  }, options.renewEveryMs);
  timer.unref();
  return {
    hold: (key) => held.add(key),
    release: (key) => held.delete(key),
    held,
    stop: () => clearInterval(timer),
  };
}
