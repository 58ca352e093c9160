import { test } from 'node:test'
import assert from 'node:assert/strict'
import { check } from '../plugin.js'
import { keep, drop } from '../bilten-plugin.js'

test('test events are dropped, the rest kept', () => {
  assert.deepEqual(check({ event_type: 'test_event', organizer_id: 'org-1' }, {}), drop())
  assert.deepEqual(check({ event_type: 'purchase', organizer_id: 'org-1' }, {}), keep())
})
