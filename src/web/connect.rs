//! Ready-to-paste configuration for the common MCP clients, for one service's gateway URL: with
//! the key itself on the page that shows a new key once, with a placeholder everywhere else.

use serde_json::json;

/// What stands for the key where the key itself is not shown.
pub const KEY_PLACEHOLDER: &str = "<your API key>";

/// The environment variable the SDK and curl examples read the key from.
const KEY_VARIABLE: &str = "MCP_PLATFORM_KEY";

/// One client's configuration.
pub struct Snippet {
    pub client: &'static str,
    /// Where it goes, when it goes in a file.
    pub file: Option<&'static str>,
    pub text: String,
    pub note: Option<&'static str>,
}

impl Snippet {
    /// Lines, for the height of the box that shows it.
    pub fn lines(&self) -> usize {
        self.text.lines().count()
    }
}

/// The configuration of each common client for the service `name` at `url`, with `key` (the
/// key, or `KEY_PLACEHOLDER`).
pub fn snippets(name: &str, url: &str, key: &str) -> Vec<Snippet> {
    let bearer = format!("Bearer {key}");
    let pretty = |value: serde_json::Value| serde_json::to_string_pretty(&value).expect("JSON writes");
    let export = format!("export {KEY_VARIABLE}='{key}'");
    vec![
        Snippet {
            client: "Claude Code",
            file: None,
            text: format!(
                "claude mcp add --transport http {name} {url} --header \"Authorization: {bearer}\""
            ),
            note: None,
        },
        Snippet {
            client: "Cursor",
            file: Some("~/.cursor/mcp.json"),
            text: pretty(
                json!({ "mcpServers": { name: { "url": url, "headers": { "Authorization": bearer } } } }),
            ),
            note: None,
        },
        Snippet {
            client: "VS Code",
            file: Some(".vscode/mcp.json"),
            text: pretty(json!({ "servers": { name: {
                "type": "http", "url": url, "headers": { "Authorization": bearer } } } })),
            note: None,
        },
        Snippet {
            client: "Claude Desktop",
            file: Some("claude_desktop_config.json"),
            text: pretty(json!({ "mcpServers": { name: {
                "command": "npx",
                "args": ["-y", "mcp-remote", url, "--header", "Authorization:${MCP_PLATFORM_AUTH}"],
                "env": { "MCP_PLATFORM_AUTH": bearer },
            } } })),
            note: Some(
                "Claude Desktop starts local commands only: the mcp-remote bridge (Node.js) connects it \
                 to the gateway. The key then sits in this file on your computer; keep it to yourself.",
            ),
        },
        Snippet {
            client: "Python SDK",
            file: None,
            text: format!(
                r#"# pip install "mcp>=2.3"; {export}; python list_tools.py
import asyncio, os

import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client


async def main():
    headers = {{"Authorization": "Bearer " + os.environ["{KEY_VARIABLE}"]}}
    async with httpx2.AsyncClient(headers=headers) as http:
        async with Client(streamable_http_client("{url}", http_client=http)) as client:
            tools = await client.list_tools()
            print([tool.name for tool in tools.tools])


asyncio.run(main())"#
            ),
            note: None,
        },
        Snippet {
            client: "TypeScript SDK",
            file: None,
            text: format!(
                r#"// npm install @modelcontextprotocol/client; {export}; node list-tools.mjs
import {{ Client, StreamableHTTPClientTransport }} from '@modelcontextprotocol/client';

const transport = new StreamableHTTPClientTransport(new URL('{url}'), {{
  requestInit: {{ headers: {{ Authorization: `Bearer ${{process.env.{KEY_VARIABLE}}}` }} }},
}});
const client = new Client({{ name: 'my-app', version: '1.0.0' }});
await client.connect(transport);
console.log((await client.listTools()).tools.map((tool) => tool.name));
await client.close();"#
            ),
            note: None,
        },
        Snippet {
            client: "curl",
            file: None,
            text: format!(
                r#"{export}
curl -s {url} -H "Authorization: Bearer ${KEY_VARIABLE}" \
  -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/list' \
  -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}},"io.modelcontextprotocol/clientInfo":{{"name":"curl","version":"1"}}}}}}}}'"#
            ),
            note: Some("One stateless (2026-07-28) request: no session to open first."),
        },
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn every_client_gets_the_url_and_the_key() {
        let url = "https://mcp.example.com/mcp/github";
        let key = "mcp_sk_0123456789abcdef";
        let snippets = snippets("github", url, key);
        assert_eq!(snippets.len(), 7);
        for snippet in &snippets {
            assert!(snippet.text.contains(url), "{}", snippet.client);
            assert!(snippet.text.contains(key), "{}", snippet.client);
            if snippet.file.is_some_and(|f| f.ends_with(".json")) {
                let parsed: Value = serde_json::from_str(&snippet.text).expect("valid JSON");
                let servers = parsed.get("mcpServers").or_else(|| parsed.get("servers")).unwrap();
                assert!(servers.get("github").is_some(), "{}", snippet.client);
            }
        }
        assert_eq!(
            snippets[0].text,
            format!("claude mcp add --transport http github {url} --header \"Authorization: Bearer {key}\"")
        );
        let desktop: Value = serde_json::from_str(&snippets[3].text).unwrap();
        assert_eq!(desktop["mcpServers"]["github"]["env"]["MCP_PLATFORM_AUTH"], format!("Bearer {key}"));
        // The SDKs and curl read the key from the environment: it is in the export line only.
        for snippet in &snippets[4..] {
            assert_eq!(snippet.text.matches(key).count(), 1, "{}", snippet.client);
        }
        let placeheld = super::snippets("github", url, KEY_PLACEHOLDER);
        assert!(placeheld.iter().all(|s| !s.text.contains("mcp_sk_")));
    }
}
