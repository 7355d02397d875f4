//! The OpenAPI 3.1 document served at `/openapi.json`.

use serde_json::{Value, json};

fn op(summary: &str, request: Option<&str>, response: &str) -> Value {
    let mut operation = json!({
        "summary": summary,
        "responses": {
            "200": { "description": response },
            "4XX": { "$ref": "#/components/responses/Error" },
            "5XX": { "$ref": "#/components/responses/Error" },
        },
    });
    if let Some(schema) = request {
        operation["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } },
        });
    }
    operation
}

fn with_id(mut operation: Value, name: &str) -> Value {
    operation["parameters"] =
        json!([{ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }]);
    operation
}

/// The document.
pub fn document() -> Value {
    let limits = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "timeout_ms": { "type": "integer", "minimum": 1, "description": "Wall-clock deadline." },
            "memory_bytes": { "type": "integer", "minimum": 0 },
            "fuel": { "type": "integer", "minimum": 1, "description": "About one unit per wasm instruction." },
            "max_output_bytes": { "type": "integer", "minimum": 0, "description": "Cap on each of stdout and stderr." },
            "disk_bytes": { "type": "integer", "minimum": 0 },
            "files": { "type": "integer", "minimum": 0 },
            "open_files": { "type": "integer", "minimum": 1, "description": "Cap on files open at once." },
        },
        "description": "Each limit left out takes the server's default; one above the server's maximum (--max-memory, --max-disk, --max-output, --max-fuel, --max-files, --max-open-files, --max-timeout) is refused with 400.",
    });
    let execute = json!({
        "type": "object",
        "required": ["code"],
        "additionalProperties": false,
        "properties": {
            "runtime": { "type": "string", "enum": ["python", "python-lite", "javascript"], "default": "python" },
            "code": { "type": "string" },
            "name": { "type": "string", "description": "The script's file name in the workspace." },
            "stdin": { "type": "string" },
            "args": { "type": "array", "items": { "type": "string" } },
            "env": { "type": "object", "additionalProperties": { "type": "string" } },
            "limits": { "$ref": "#/components/schemas/Limits" },
            "timeout_ms": { "type": "integer", "minimum": 1 },
            "requirements": { "type": "array", "items": { "type": "string" }, "description": "One-shot runs: packages installed first." },
            "files": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Path → UTF-8 text written first." },
            "files_base64": { "type": "object", "additionalProperties": { "type": "string" } },
            "stream": { "type": "boolean", "description": "Answer with Server-Sent Events: start, stdout, stderr, then result or error." },
            "run_id": { "type": "string", "description": "A client-chosen id for POST /runs/{run_id}/cancel." },
            "seed": { "type": "integer", "description": "Run deterministically with this seed." },
        },
    });
    let outcome = json!({
        "type": "object",
        "properties": {
            "status": { "type": "string", "enum": ["ok", "error", "limit", "crashed"] },
            "exit_code": { "type": ["integer", "null"] },
            "stdout": { "type": "string" },
            "stderr": { "type": "string" },
            "limit": { "type": ["string", "null"], "enum": ["deadline", "fuel", "memory", "table", "output", "cancelled", "disk", "files", null] },
            "duration_ms": { "type": "number" },
            "memory_peak_bytes": { "type": "integer" },
            "files": { "type": "array", "items": { "type": "object" } },
            "run_id": { "type": "string" },
            "runtime": { "type": "string" },
        },
    });
    let create = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "runtime": { "type": "string", "default": "python" },
            "requirements": { "type": "array", "items": { "type": "string" } },
            "env": { "type": "object", "additionalProperties": { "type": "string" } },
            "limits": { "$ref": "#/components/schemas/Limits" },
            "session": { "type": "boolean", "description": "On /sandboxes: one live interpreter (python only)." },
        },
    });
    let submission = json!({
        "type": "object",
        "required": ["source_code", "language_id"],
        "properties": {
            "source_code": { "type": "string" },
            "language_id": { "type": "integer", "enum": [63, 71, 92, 93, 97, 100, 102, 109, 113] },
            "stdin": { "type": "string" },
            "expected_output": { "type": "string" },
            "cpu_time_limit": { "type": "number" },
            "wall_time_limit": { "type": "number" },
            "memory_limit": { "type": "number", "description": "KB" },
            "command_line_arguments": { "type": "string" },
            "redirect_stderr_to_stdout": { "type": "boolean" },
        },
    });
    let sandbox_paths = |base: &str| -> Vec<(String, Value)> {
        vec![
            (
                format!("/{base}/{{id}}"),
                json!({
                    "get": with_id(op("Describe a sandbox or session", None, "The description"), "id"),
                    "delete": with_id(op("Close it, cancelling its run", None, "Closed (204)"), "id"),
                }),
            ),
            (
                format!("/{base}/{{id}}/execute"),
                json!({
                    "post": with_id(op("Execute code in it (a session keeps its interpreter state)", Some("Execute"), "The outcome, or an event stream"), "id"),
                }),
            ),
            (
                format!("/{base}/{{id}}/cancel"),
                json!({
                    "post": with_id(op("Cancel its running execution", None, "Cancelled (202)"), "id"),
                }),
            ),
            (
                format!("/{base}/{{id}}/packages"),
                json!({
                    "post": with_id(op("Install packages for its later executions (sandboxes only)", Some("Install"), "What was installed"), "id"),
                }),
            ),
            (
                format!("/{base}/{{id}}/files"),
                json!({
                    "get": with_id(op("List its files", None, "Entries with path, kind and size"), "id"),
                }),
            ),
            (
                format!("/{base}/{{id}}/files/{{path}}"),
                json!({
                    "get": op("Download a file (raw bytes)", None, "The bytes"),
                    "put": op("Upload a file (raw bytes as the body)", None, "Written (201)"),
                    "delete": op("Remove a file", None, "Removed (204)"),
                    "parameters": [
                        { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                        { "name": "path", "in": "path", "required": true, "schema": { "type": "string" } },
                    ],
                }),
            ),
        ]
    };
    let mut paths = serde_json::Map::new();
    for (path, item) in [
        ("/health".to_string(), json!({ "get": op("Liveness, counts of sessions, sandboxes and runs", None, "Health") })),
        ("/metrics".to_string(), json!({ "get": op("Prometheus metrics", None, "Text exposition format") })),
        ("/openapi.json".to_string(), json!({ "get": op("This document", None, "OpenAPI 3.1") })),
        ("/runtimes".to_string(), json!({ "get": op("The runtimes", None, "id, language, version, installed, sessions") })),
        ("/execute".to_string(), json!({ "post": op("Run code once in a fresh sandbox", Some("Execute"), "The outcome, or an event stream") })),
        ("/runs/{run_id}/cancel".to_string(), json!({ "post": with_id(op("Cancel a run in flight", None, "Cancelled (202)"), "run_id") })),
        ("/sandboxes".to_string(), json!({
            "get": op("List sandboxes and sessions", None, "Descriptions"),
            "post": op("Create a sandbox (files carry over between executions)", Some("Create"), "Created (201)"),
        })),
        ("/sessions".to_string(), json!({
            "get": op("List sandboxes and sessions", None, "Descriptions"),
            "post": op("Create a session (one live python interpreter)", Some("Create"), "Created (201)"),
        })),
        ("/languages".to_string(), json!({ "get": op("Judge0: languages", None, "id and name of each") })),
        ("/statuses".to_string(), json!({ "get": op("Judge0: status ids and descriptions", None, "The table") })),
        ("/about".to_string(), json!({ "get": op("Judge0: about", None, "Versions") })),
        ("/config_info".to_string(), json!({ "get": op("Judge0: configuration", None, "Limits and switches") })),
        ("/submissions".to_string(), json!({ "post": op("Judge0: create a submission (?wait=true, ?base64_encoded=true, ?fields=)", Some("Submission"), "A token, or the finished submission (201)") })),
        ("/submissions/{token}".to_string(), json!({
            "get": with_id(op("Judge0: a submission (?base64_encoded, ?fields)", None, "The submission"), "token"),
            "delete": with_id(op("Judge0: delete a finished submission", None, "The submission"), "token"),
        })),
        ("/submissions/batch".to_string(), json!({
            "post": op("Judge0: create up to 20 submissions", None, "Tokens (201)"),
            "get": op("Judge0: submissions by ?tokens=a,b,c", None, "{\"submissions\": [...]}"),
        })),
        ("/mcp".to_string(), json!({ "post": op("MCP over streamable HTTP (JSON-RPC)", None, "MCP messages") })),
    ]
    .into_iter()
    .chain(sandbox_paths("sandboxes"))
    .chain(sandbox_paths("sessions"))
    {
        paths.insert(path, item);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "dvm",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run untrusted and machine-generated code in WebAssembly sandboxes with hard limits. Native JSON API, a Judge0-compatible subset and MCP.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Limits": limits,
                "Execute": execute,
                "Outcome": outcome,
                "Create": create,
                "Install": {
                    "type": "object",
                    "required": ["requirements"],
                    "properties": { "requirements": { "type": "array", "items": { "type": "string" } } },
                },
                "Submission": submission,
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": { "kind": { "type": "string" }, "message": { "type": "string" } },
                        },
                    },
                },
            },
            "responses": {
                "Error": {
                    "description": "An error (Judge0 routes answer in Judge0's shapes)",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
                },
            },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "security": [{ "bearer": [] }, {}],
    })
}
