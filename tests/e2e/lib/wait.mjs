// Waiting helpers. Tests never sleep for a fixed time: they poll for a condition and
// give up at a deadline with a message that says what never happened.

import { setTimeout as delay } from 'node:timers/promises';

/**
 * Polls `predicate` (sync or async) until it returns a truthy value, and returns it.
 * Throws `Error("timed out after Nms waiting for <what>")` at the deadline. An
 * exception thrown by the predicate fails the wait at once.
 */
export async function waitFor(predicate, timeoutMs = 5000, what = 'a condition', intervalMs = 10) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    }
    await delay(intervalMs);
  }
}

/** Resolves or rejects like `promise`, or rejects when `timeoutMs` passes first. */
export function withTimeout(promise, timeoutMs, what = 'an operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs}ms waiting for ${what}`)),
      timeoutMs,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A promise for the next `event` of an EventEmitter-like object, with a deadline. */
export function once(emitter, event, timeoutMs = 5000) {
  return withTimeout(
    new Promise((resolve) => emitter.once(event, (...args) => resolve(args))),
    timeoutMs,
    `the "${event}" event`,
  );
}
