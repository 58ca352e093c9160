// {{name}}: a Bilten Analytics plugin in JavaScript.
// `bilten-analytics plugin build .` makes {{name}}.wasm.
import { keep, drop } from './bilten-plugin.js'

export const name = '{{name}}'
export const version = '0.1.0'

/**
 * Called once per event. Return keep(), drop(), reject(code, field, message)
 * or modify({ ...event, properties: { ...event.properties, more: 1 } }).
 * `config` is the plugin's table from the server's `[[plugins]]` entry.
 *
 * @param {import('./bilten-plugin.js').PluginEvent} event
 * @param {Record<string, unknown>} config
 */
export function check(event, config) {
  // Events marked as tests never reach the tables.
  if (event.event_type === 'test_event') return drop()
  return keep()
}
