// An MCP client on the official TypeScript SDK 1.x (what most desktop clients embed), driven by a
// plan of calls from the Python tests: it connects over stdio or Streamable HTTP, runs each step
// with the SDK's own methods (callTool validates structured content against the tool's output
// schema, as those clients do) and prints, as one JSON document, what each step gave back or
// threw. The Python side asserts on it; this script decides nothing.
//
//   node sdk_client.mjs stdio <command> [args...] < plan.json
//   node sdk_client.mjs http <url> [bearer-token] < plan.json
//
// plan.json: {"steps": [{"tool": "complete", "arguments": {...}, "timeout"?: ms} | {"read": "llm-router://..."}
//                       | {"read": "llm-router://...", "until": "text", "within": ms}],
//             "elicit": {"action": "accept" | "decline" | "cancel", "content": {...}}}
// With "elicit", the client declares form elicitation and answers every elicitation/create so
// (an accept without "content" takes each field's default); what it was asked is in "elicited".
//
// A value {"$from": [i, "structuredContent", "tool_calls"]} anywhere in a step's arguments is
// replaced by what step i gave back at that path, so a conversation goes on with what the server
// answered (its tool calls, their ids), as a client's agent loop does.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport, getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { readFileSync } from "node:fs";

const [mode, target, ...rest] = process.argv.slice(2);
const plan = JSON.parse(readFileSync(0, "utf8"));

let transport;
if (mode === "stdio") {
  // The SDK passes a child only a minimal environment; the server's ledger comes in its arguments.
  transport = new StdioClientTransport({ command: target, args: rest, env: getDefaultEnvironment(), stderr: "inherit" });
} else if (mode === "http") {
  const headers = rest[0] ? { Authorization: `Bearer ${rest[0]}` } : {};
  transport = new StreamableHTTPClientTransport(new URL(target), { requestInit: { headers } });
} else {
  throw new Error(`unknown mode ${mode}: stdio or http`);
}

const elicited = [];
const client = new Client({ name: "llm-router-peer-test", version: "1.0.0" },
  plan.elicit ? { capabilities: { elicitation: { form: {} } } } : undefined);
if (plan.elicit) {
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    elicited.push(request.params);
    const { action, content } = plan.elicit;
    if (action !== "accept") return { action };
    const defaults = Object.fromEntries(Object.entries(request.params.requestedSchema.properties)
      .map(([key, field]) => [key, field.default]));
    return { action, content: content ?? defaults };
  });
}
await client.connect(transport);
const out = {
  server: client.getServerVersion(),
  capabilities: client.getServerCapabilities(),
  tools: (await client.listTools()).tools.map((t) => t.name),
  steps: [],
  elicited,
};

function resolve(value) {
  if (Array.isArray(value)) return value.map(resolve);
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value.$from)) {
    const [index, ...path] = value.$from;
    return path.reduce((at, key) => (at == null ? at : at[key]), out.steps[index]);
  }
  return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, resolve(inner)]));
}

for (const step of plan.steps) {
  try {
    if (step.read !== undefined && step.until !== undefined) {
      // Read again (every 100 ms, for at most step.within ms) until the text holds step.until.
      const deadline = Date.now() + (step.within ?? 60000);
      let text = null;
      for (;;) {
        try {
          text = (await client.readResource({ uri: resolve(step.read) })).contents[0]?.text ?? null;
        } catch (error) {
          text = `threw ${error.code ?? ""} ${error.message ?? error}`;
        }
        if ((text ?? "").includes(step.until) || Date.now() > deadline) break;
        await new Promise((done) => setTimeout(done, 100));
      }
      out.steps.push({ outcome: "result", text });
    } else if (step.read !== undefined) {
      const result = await client.readResource({ uri: resolve(step.read) });
      out.steps.push({ outcome: "result", text: result.contents[0]?.text ?? null });
    } else {
      // step.timeout (ms): the client gives up on the call, as its tool timeout does (sending notifications/cancelled).
      const options = step.timeout !== undefined ? { timeout: step.timeout } : undefined;
      const result = await client.callTool({ name: step.tool, arguments: resolve(step.arguments) }, undefined, options);
      out.steps.push({
        outcome: "result",
        isError: result.isError === true,
        text: result.content.map((block) => block.text ?? "").join(""),
        structuredContent: result.structuredContent ?? null,
        meta: result._meta ?? null,
      });
    }
  } catch (error) {
    out.steps.push({ outcome: "threw", code: error.code ?? null, message: String(error.message ?? error) });
  }
}

await client.close();
process.stdout.write(JSON.stringify(out) + "\n");
