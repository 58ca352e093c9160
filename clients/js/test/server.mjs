// The real server the tests talk to: started by the Rust test
// (server/tests/clients_js.rs), which passes its address and keys.
export const URL = process.env.BILTEN_ANALYTICS_URL
export const KEY = process.env.BILTEN_INGEST_KEY
const ADMIN = process.env.BILTEN_ADMIN_TOKEN

export const hasServer = Boolean(URL && ADMIN)

async function admin(path, body) {
  const res = await fetch(`${URL}/admin/${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}` },
    body,
  })
  const json = await res.json()
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(json)}`)
  return json
}

/** Writes the server's buffers, then runs SQL; returns ClickHouse's JSON rows. */
export async function rows(sql) {
  await admin('flush')
  return (await admin('query', sql)).data
}
