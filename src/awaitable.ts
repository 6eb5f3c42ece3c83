/**
 * A value that may already be there. The proxy's hot path (cookie → session → access
 * token) is made of steps that usually answer from memory (a cached unseal, a record in
 * the memory store, nothing to re-seal): returning the value itself instead of a promise
 * keeps such a request free of promise allocations and microtask hops, while a step that
 * does wait (crypto, Redis, a refresh) still returns a promise.
 */
export type Awaitable<T> = T | Promise<T>;

/**
 * `fn(value)` now when the value is there, after it settles otherwise. A throw in `fn`
 * surfaces as a throw in the first case and as a rejection in the second: callers that
 * may get either handle both (see `settle`).
 */
export function andThen<T, U>(value: Awaitable<T>, fn: (value: T) => Awaitable<U>): Awaitable<U> {
  return value instanceof Promise ? value.then(fn) : fn(value);
}

/**
 * Runs a step that may answer now or later and reports to a Node-style callback exactly
 * once: synchronously when the step did not wait (or threw), after it settles otherwise.
 */
export function settle<T>(step: () => Awaitable<T>, callback: (err: Error | null, value?: T) => void): void {
  let result: Awaitable<T>;
  try {
    result = step();
  } catch (err) {
    callback(asError(err));
    return;
  }
  if (result instanceof Promise) {
    result.then(
      (value) => callback(null, value),
      (err: unknown) => callback(asError(err)),
    );
  } else {
    callback(null, result);
  }
}

/**
 * What was thrown, as an Error. A throw of `undefined` or a string must still read as a
 * failure: a callback that took a missing error for success would carry on without
 * whatever the step failed to provide (for the proxy, the access token).
 */
function asError(thrown: unknown): Error {
  return thrown instanceof Error ? thrown : new Error(`failed without an Error: ${String(thrown)}`);
}
