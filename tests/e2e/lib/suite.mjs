// Shared set-up of suites that run against `startTarget`.

import { waitFor } from './wait.mjs';

/**
 * Waits until FetchSockets shows no socket in `namespaces`, so that the next
 * test's whole-namespace selectors and room counts see only its own sockets.
 */
export function waitNoSockets(api, namespaces, what = 'every socket of the last test to be gone') {
  return waitFor(
    async () => {
      for (const namespace of namespaces) {
        if ((await api.fetchSockets({ target: { namespace } })).sockets.length) return false;
      }
      return true;
    },
    10_000,
    what,
    50,
  );
}
