// Drives a live swarm's OpenAI-compatible API with the official OpenAI JavaScript client.
// Usage: node check.mjs http://127.0.0.1:8080 MODEL_NAME
// Prints one JSON line per check: {"check": NAME, "ok": true|false, ...what the client returned}.
// "ok" only says the call behaved as the client expects (a result, or the expected error class);
// the xunit test OpenAiClientTests asserts on the values.
import OpenAI from 'openai';

const [baseUrl, model] = process.argv.slice(2);
if (!baseUrl || !model) {
  console.error('usage: node check.mjs BASE_URL MODEL_NAME');
  process.exit(2);
}
const client = new OpenAI({ baseURL: `${baseUrl.replace(/\/$/, '')}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });

async function check(name, run) {
  try {
    console.log(JSON.stringify({ check: name, ok: true, ...(await run()) }));
  } catch (e) {
    console.log(JSON.stringify({ check: name, ok: false, error: String(e?.message ?? e), status: e?.status ?? null }));
  }
}

/** Runs a call that must fail with the given error class; returns what the client saw of the error. */
async function expectError(ErrorClass, call) {
  try {
    await call();
  } catch (e) {
    if (!(e instanceof ErrorClass)) throw e;
    return { status: e.status, type: e.type ?? e.error?.type ?? null, param: e.param ?? null, code: e.code ?? null, message: e.error?.message ?? e.message };
  }
  throw new Error(`expected ${ErrorClass.name}, the call succeeded`);
}

const textPrompt = 'def add(a, b):\n';

await check('models.list', async () => {
  const page = await client.models.list();
  return { ids: page.data.map((m) => m.id), objects: page.data.map((m) => m.object) };
});

await check('models.retrieve', async () => {
  const m = await client.models.retrieve(model);
  return { id: m.id, object: m.object, owned_by: m.owned_by, created: m.created };
});

await check('completions.token_ids', async () => {
  const r = await client.completions.create({ model, prompt: [1, 2, 3, 4], max_tokens: 6, temperature: 0 });
  const c = r.choices[0];
  return { id: r.id, object: r.object, text: c.text, finish_reason: c.finish_reason, usage: r.usage, token_ids: c.token_ids ?? null };
});

await check('completions.text', async () => {
  const r = await client.completions.create({ model, prompt: textPrompt, max_tokens: 16, temperature: 0 });
  const c = r.choices[0];
  return { text: c.text, finish_reason: c.finish_reason, usage: r.usage };
});

await check('completions.stream_stop', async () => {
  // The stop sequence is the first line break of the greedy completion of textPrompt.
  const unstreamed = await client.completions.create({ model, prompt: textPrompt, max_tokens: 24, temperature: 0, stop: ['\n'] });
  const stream = await client.completions.create({ model, prompt: textPrompt, max_tokens: 24, temperature: 0, stop: ['\n'], stream: true });
  let text = '';
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    chunks++;
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  return {
    text, chunks, finish_reason: finish,
    unstreamed_text: unstreamed.choices[0].text, unstreamed_finish_reason: unstreamed.choices[0].finish_reason,
  };
});

await check('completions.stream_usage', async () => {
  const stream = await client.completions.create({
    model, prompt: textPrompt, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let chunks = 0;
  let usage = null;
  let last = null;
  for await (const chunk of stream) {
    chunks++;
    text += chunk.choices[0]?.text ?? '';
    usage = chunk.usage ?? usage;
    last = chunk;
  }
  return { text, chunks, usage, last_choices: last?.choices.length ?? null, last_swarm_stages: last?.swarm?.stages?.length ?? null };
});

await check('completions.logprobs_echo', async () => {
  // lm-evaluation-harness's loglikelihood request: the prompt echoed with its tokens' logprobs, one new token.
  const r = await client.completions.create({ model, prompt: textPrompt, max_tokens: 1, temperature: 0, echo: true, logprobs: 1 });
  const c = r.choices[0];
  return { text: c.text, finish_reason: c.finish_reason, usage: r.usage, logprobs: c.logprobs };
});

await check('completions.stream_logprobs', async () => {
  const body = { model, prompt: textPrompt, max_tokens: 24, temperature: 0, stop: ['\n'], logprobs: 2 };
  const unstreamed = (await client.completions.create(body)).choices[0];
  const stream = await client.completions.create({ ...body, stream: true });
  let text = '';
  const tokens = [];
  const tokenLogprobs = [];
  let chunksMatchTheirTokens = true;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    if (!c) continue;
    text += c.text;
    const lp = c.logprobs ?? { tokens: [], token_logprobs: [] };
    if (lp.tokens.join('') !== c.text) chunksMatchTheirTokens = false;
    tokens.push(...lp.tokens);
    tokenLogprobs.push(...lp.token_logprobs);
  }
  return {
    text, tokens, token_logprobs: tokenLogprobs, chunks_match_their_tokens: chunksMatchTheirTokens,
    unstreamed_text: unstreamed.text, unstreamed_tokens: unstreamed.logprobs.tokens, unstreamed_token_logprobs: unstreamed.logprobs.token_logprobs,
  };
});

await check('error.400', () => expectError(OpenAI.BadRequestError,
  () => client.completions.create({ model, prompt: [1, 2], max_tokens: 0 })));

await check('error.404', () => expectError(OpenAI.NotFoundError, () => client.models.retrieve('no-such-model')));

await check('error.chat', () => expectError(OpenAI.BadRequestError,
  () => client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hello' }] })));

await check('error.embeddings', () => expectError(OpenAI.NotFoundError,
  () => client.embeddings.create({ model, input: 'hello' })));
