// Drives a coordinator that asks for an API key (and may serve HTTPS) with the official OpenAI JavaScript client.
// Usage: NODE_EXTRA_CA_CERTS=ca.pem node auth.mjs BASE_URL MODEL_NAME API_KEY PROMPT_IDS_JSON
// Prints one JSON line per check, as check.mjs does; the xunit test HttpsSwarmTests asserts on the values.
import OpenAI from 'openai';

const [baseUrl, model, apiKey, promptJson] = process.argv.slice(2);
if (!baseUrl || !model || !apiKey || !promptJson) {
  console.error('usage: node auth.mjs BASE_URL MODEL_NAME API_KEY PROMPT_IDS_JSON');
  process.exit(2);
}
const options = { baseURL: `${baseUrl.replace(/\/$/, '')}/v1`, maxRetries: 0, timeout: 120_000 };
const client = new OpenAI({ ...options, apiKey });
const wrong = new OpenAI({ ...options, apiKey: 'not-a-key-of-this-coordinator' });

async function check(name, run) {
  try {
    console.log(JSON.stringify({ check: name, ok: true, ...(await run()) }));
  } catch (e) {
    console.log(JSON.stringify({ check: name, ok: false, error: String(e?.message ?? e), status: e?.status ?? null }));
  }
}

await check('auth.models.list', async () => {
  const page = await client.models.list();
  return { ids: page.data.map((m) => m.id) };
});

await check('auth.completions', async () => {
  const r = await client.completions.create({ model, prompt: JSON.parse(promptJson), max_tokens: 4, temperature: 0 });
  return { token_ids: r.choices[0].token_ids, finish_reason: r.choices[0].finish_reason };
});

await check('auth.wrong_key', async () => {
  try {
    await wrong.models.list();
  } catch (e) {
    if (!(e instanceof OpenAI.AuthenticationError)) throw e;
    return { status: e.status, type: e.type ?? null, code: e.code ?? null };
  }
  throw new Error('expected AuthenticationError, the call succeeded');
});
