// An MCP requester on the TypeScript SDK 2.x client and the Tasks extension's own requester
// library (@modelcontextprotocol/ext-tasks), at protocol 2026-07-28 over stateless Streamable
// HTTP, driven by a plan from the Python tests; it prints, as one JSON document, what each call
// gave back. The library frames, polls and cancels tasks itself; this script decides nothing.
//
//   node tasks_client.mjs <url> [bearer-token] < plan.json
//
// plan.json: {"steps": [{"tool": "complete", "arguments": {...}, "cancelWhen"?: "statusMessage prefix"}]}

import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { createTaskSessionFromClient } from "@modelcontextprotocol/ext-tasks/client";
import { readFileSync } from "node:fs";

const VERSION = "2026-07-28";
const CLIENT_INFO = { name: "llm-router-tasks-test", version: "1.0.0" };
const [url, token] = process.argv.slice(2);
const plan = JSON.parse(readFileSync(0, "utf8"));
const auth = token ? { Authorization: `Bearer ${token}` } : {};

const client = new Client(CLIENT_INFO, { versionNegotiation: { mode: { pin: VERSION } } });
await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: auth } }));

// The library sends task traffic through the host (the SDK client's codecs do not take task
// shapes): one POST per request, with the routing headers the spec asks for.
let sent = 0;
async function rawDispatch(request, options = {}) {
  const body = { ...request, jsonrpc: "2.0", id: request.id ?? `raw-${++sent}` };
  const params = body.params ?? {};
  const name = body.method === "tools/call" ? params.name : params.taskId;
  const headers = {
    ...auth, "Content-Type": "application/json", Accept: "application/json, text/event-stream",
    "MCP-Protocol-Version": VERSION, "Mcp-Method": body.method, ...(name !== undefined ? { "Mcp-Name": name } : {}),
  };
  const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body), signal: options.signal });
  const text = await response.text();
  const messages = (response.headers.get("content-type") ?? "").startsWith("text/event-stream")
    ? text.split("\n").filter((line) => line.startsWith("data:")).map((line) => JSON.parse(line.slice(5)))
    : [JSON.parse(text)];
  const reply = messages.find((m) => m.id === body.id);
  return reply.error !== undefined ? { kind: "error", error: reply.error } : { kind: "result", result: reply.result };
}

const session = createTaskSessionFromClient(client, {
  endpointId: "llm-router-tests",
  rawDispatch,
  v2RequestFraming: { protocolVersion: VERSION, clientInfo: CLIENT_INFO, clientCapabilities: {} },
});
const out = { era: client.getProtocolEra?.() ?? null, capabilities: client.getServerCapabilities() ?? null, steps: [] };

for (const step of plan.steps) {
  const seen = [];
  try {
    const execution = await session.callTool(step.tool, step.arguments);
    let cancelling = null;
    const { outcome, lastTask } = await execution.settle({
      onEvent: (event) => {
        if (event.type !== "task") return;
        seen.push({ status: event.task.status, statusMessage: event.task.statusMessage ?? null });
        if (step.cancelWhen && cancelling === null && (event.task.statusMessage ?? "").startsWith(step.cancelWhen)) {
          cancelling = execution.cancel();
        }
      },
    });
    if (cancelling !== null) await cancelling;
    out.steps.push({
      outcome: "settled", kind: execution.kind, taskId: execution.handle?.taskId ?? null, status: outcome.status,
      result: outcome.status === "completed" ? outcome.result : null, lastStatus: lastTask?.status ?? null, seen,
    });
  } catch (error) {
    out.steps.push({ outcome: "threw", name: error.name, code: error.code ?? null, message: String(error.message ?? error), seen });
  }
}

await session.close();
await client.close();
process.stdout.write(JSON.stringify(out) + "\n");
