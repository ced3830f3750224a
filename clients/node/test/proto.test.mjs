// The package ships a copy of the repository's proto (so that it works when
// installed from a registry); it must not drift from proto/.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';

it('the packaged proto is the repository proto (npm run sync-proto updates it)', () => {
  const packaged = readFileSync(new URL('../proto/roomcast/v1/roomcast.proto', import.meta.url), 'utf8');
  const repo = readFileSync(new URL('../../../proto/roomcast/v1/roomcast.proto', import.meta.url), 'utf8');
  assert.equal(packaged, repo);
});
