// The official OpenAI Node SDK against a running gptapi: what a caller
// with the SDK sends, and whether the SDK reads every answer, stream and
// error gptapi gives back. Run by e2e_sdk.py, which starts the gateway and
// its mock upstreams and reads the records afterwards.
//
//   node check.mjs BASE_URL API_KEY
//
// Prints one JSON line per check: {"name", "ok", "detail"}. Request ids
// are "sdk-<check>" so the records can be found.

import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20000 });
const messages = [{ role: "user", content: "hi" }];

function rid(name) {
  return { headers: { "X-Request-Id": "sdk-" + name } };
}

function expect(got, want, what) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

// expectError runs fn, which must throw the SDK's error class cls with
// status and, when given, code; the message must name the problem.
async function expectError(fn, cls, status, code, words) {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof cls)) throw new Error(`threw ${e?.constructor?.name}: ${e?.message}`);
    expect(e.status, status, "status");
    if (!e.requestID) throw new Error("the SDK found no X-Request-Id on the error");
    if (code !== undefined) expect(e.code, code, "code");
    if (!String(e.message).includes(words)) throw new Error(`message ${JSON.stringify(e.message)} lacks ${JSON.stringify(words)}`);
    return;
  }
  throw new Error("no error thrown");
}

const checks = {
  async "chat.create"() {
    const { data, response } = await client.chat.completions
      .create({ model: "m-a", messages }, rid("chat.create")).withResponse();
    expect(data.choices[0].message.content, "Hello from A", "content");
    expect(data.usage.total_tokens, 18, "usage.total_tokens");
    expect(data._request_id, "sdk-chat.create", "the request id the SDK read");
    expect(response.headers.get("x-request-id"), "sdk-chat.create", "X-Request-Id");
    expect(response.headers.get("x-gptapi-upstream"), "a", "X-Gptapi-Upstream");
  },

  async "chat.stream"() {
    const stream = await client.chat.completions.create(
      { model: "m-a", messages, stream: true }, rid("chat.stream"));
    let text = "";
    let usage = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      usage ??= chunk.usage ?? null;
    }
    expect(text, "Hello from A", "streamed text");
    expect(usage, null, "usage the caller did not ask for");
  },

  async "chat.stream_usage"() {
    const stream = await client.chat.completions.create(
      { model: "m-a", messages, stream: true, stream_options: { include_usage: true } }, rid("chat.stream_usage"));
    let usage = null;
    for await (const chunk of stream) usage = chunk.usage ?? usage;
    expect(usage, { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 }, "usage");
  },

  // The SDK's stream helper assembles the answer from the chunks.
  async "chat.stream_helper"() {
    const runner = client.chat.completions.stream({ model: "m-a", messages }, rid("chat.stream_helper"));
    const done = await runner.finalChatCompletion();
    expect(done.choices[0].message.content, "Hello from A", "assembled content");
    expect(done.choices[0].finish_reason, "stop", "finish_reason");
  },

  // A client with special_prefix and a model rename: the SDK sees the
  // prefix in the text and the name it asked for.
  async "chat.prefix_and_model"() {
    const data = await client.chat.completions.create({ model: "m-p", messages }, rid("chat.prefix_and_model"));
    expect(data.choices[0].message.content, "PFX: Hello from P", "content");
    expect(data.model, "m-p", "model");
    const stream = await client.chat.completions.create({ model: "m-p", messages, stream: true });
    let text = "";
    for await (const chunk of stream) {
      expect(chunk.model, "m-p", "chunk model");
      text += chunk.choices[0]?.delta?.content ?? "";
    }
    expect(text, "PFX: Hello from P", "streamed text");
  },

  // Tool calls streamed in pieces, from a client with special_prefix: the
  // SDK's helper assembles the calls, and no prefix lands in an answer
  // that has no text.
  async "chat.tool_calls_stream"() {
    const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
    const runner = client.chat.completions.stream({ model: "m-t", messages, tools }, rid("chat.tool_calls_stream"));
    const done = await runner.finalChatCompletion();
    const choice = done.choices[0];
    expect(choice.message.tool_calls.map((c) => [c.id, c.function.name, c.function.arguments]),
      [["call_0", "get_weather", '{"city":"Paris"}']], "assembled tool calls");
    expect(choice.finish_reason, "tool_calls", "finish_reason");
    expect(choice.message.content ?? "", "", "content");
  },

  async "completions"() {
    const data = await client.completions.create({ model: "m-a", prompt: "p" }, rid("completions"));
    expect(data.choices[0].text, "Hello from A", "text");
    const stream = await client.completions.create({ model: "m-a", prompt: "p", stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    expect(text, "Hello from A", "streamed text");
  },

  // The SDK asks for base64 unless told otherwise and decodes it.
  async "embeddings"() {
    const b64 = await client.embeddings.create({ model: "m-a", input: ["x", "y"] }, rid("embeddings"));
    expect(b64.data.length, 2, "embeddings");
    expect(Array.from(b64.data[1].embedding), [0.25, -0.5, 0.125], "decoded base64 embedding");
    const floats = await client.embeddings.create({ model: "m-a", input: "x", encoding_format: "float" });
    expect(floats.data[0].embedding, [0.25, -0.5, 0.125], "float embedding");
  },

  async "models.list"() {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids.sort(), ["m-a", "m-p"], "model ids");
  },

  async "errors.not_found"() {
    await expectError(() => client.chat.completions.create({ model: "nope", messages }, rid("errors.not_found")),
      OpenAI.NotFoundError, 404, "model_not_found", "nope");
  },

  async "errors.bad_request"() {
    await expectError(() => client.chat.completions.create({ model: "m-a", messages: [] }),
      OpenAI.BadRequestError, 400, undefined, "messages");
  },

  async "errors.bad_key"() {
    const stranger = new OpenAI({ baseURL, apiKey: "sk-wrong", maxRetries: 0 });
    await expectError(() => stranger.chat.completions.create({ model: "m-a", messages }),
      OpenAI.AuthenticationError, 401, undefined, "");
  },

  async "errors.all_failed"() {
    await expectError(() => client.chat.completions.create({ model: "m-f", messages }, rid("errors.all_failed")),
      OpenAI.InternalServerError, 502, "all_upstreams_failed", "f/m-f");
  },

  // A stream the caller stops reading: the SDK aborts its request, and
  // gptapi cancels the upstream's (the record says 499, e2e_sdk.py reads it).
  async "abort"() {
    const stream = await client.chat.completions.create(
      { model: "m-slow", messages, stream: true }, rid("abort"));
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) break; // leaving the loop aborts
    }
  },
};

for (const [name, fn] of Object.entries(checks)) {
  let ok = true;
  let detail = "";
  try {
    await fn();
  } catch (e) {
    ok = false;
    detail = String(e?.stack ?? e).split("\n").slice(0, 3).join(" | ");
  }
  console.log(JSON.stringify({ name, ok, detail }));
}
