//! System services: defined by the operator in a TOML file (`MCP_PLATFORM_SERVICES_FILE`),
//! loaded at start. They are the only services that may run a local command (stdio).
//!
//! ```toml
//! [[service]]
//! name = "github-projects"
//! description = "GitHub project manager"
//! kind = "stdio"
//! command = "npx"
//! args = ["-y", "@monsoft/mcp-github-project-manager", "--GITHUB_PERSONAL_TOKEN={token}"]
//! token = "github"
//! # optional: only these tools are offered, and some only to some roles (by default every tool
//! # to every role; each organization's admins may change it for their members)
//! tools = ["list_projects", "create_issue"]
//! tool_roles = { create_issue = ["admin", "developer"] }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use url::Url;

use super::definition::{CredentialPlacement, TOKEN_PLACEHOLDER, parse_upstream_url};
use super::tool_policy::ToolPolicy;
use crate::domain::ServiceName;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "service")]
    services: Vec<RawService>,
    #[serde(default, rename = "plan")]
    plans: Vec<super::plans::RawPlan>,
}

/// What the operator's file defines: system services and plans.
#[derive(Debug, Clone, Default)]
pub struct OperatorFile {
    pub services: Vec<SystemService>,
    pub plans: super::plans::Plans,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    version: String,
    #[serde(default = "yes")]
    public: bool,
    kind: String,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    token: Option<String>,
    credential_header: Option<String>,
    timeout_seconds: Option<u32>,
    /// The tools offered by default (all when absent).
    tools: Option<Vec<String>>,
    /// Tools only some roles may call by default.
    #[serde(default)]
    tool_roles: BTreeMap<String, Vec<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq)]
pub enum SystemUpstream {
    Http { url: Url, headers: BTreeMap<String, String>, placement: Option<CredentialPlacement> },
    Stdio { command: String, args: Vec<String>, env: BTreeMap<String, String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SystemService {
    pub name: ServiceName,
    pub description: String,
    pub version: String,
    pub public: bool,
    pub transport: SystemUpstream,
    /// The service-token name whose value is injected, e.g. `github`.
    pub token: Option<ServiceName>,
    pub timeout_ms: i32,
    /// The tool policy of organizations that have not set their own.
    pub tool_policy: ToolPolicy,
}

pub const DEFAULT_TIMEOUT_SECONDS: u32 = 60;

/// Parses and checks the file's text; an error names the service or plan and the field.
pub fn parse(text: &str) -> Result<OperatorFile, String> {
    let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    let plans = super::plans::Plans::with(file.plans)?;
    let mut services: Vec<SystemService> = Vec::new();
    for raw in file.services {
        let service = check(raw)?;
        if services.iter().any(|s| s.name == service.name) {
            return Err(format!("service \"{}\" is defined twice", service.name));
        }
        services.push(service);
    }
    Ok(OperatorFile { services, plans })
}

fn check(raw: RawService) -> Result<SystemService, String> {
    let name = ServiceName::parse(&raw.name).map_err(|e| format!("service \"{}\": name: {e}", raw.name))?;
    let bad = |field: &str, message: &str| format!("service \"{name}\": {field}: {message}");
    let token = raw.token.as_deref().map(ServiceName::parse).transpose().map_err(|e| bad("token", e))?;
    let timeout = raw.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    if !(1..=3600).contains(&timeout) {
        return Err(bad("timeout_seconds", "must be from 1 to 3600"));
    }
    let transport = match raw.kind.as_str() {
        "http" => {
            if raw.command.is_some() || !raw.args.is_empty() || !raw.env.is_empty() {
                return Err(bad("kind", "an http service has no command, args or env"));
            }
            let url = parse_upstream_url(
                raw.url.as_deref().ok_or_else(|| bad("url", "is required for kind = \"http\""))?,
            )
            .map_err(|e| bad("url", &e))?;
            let lines: Vec<String> = raw.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let headers =
                super::definition::parse_headers(&lines.join("\n")).map_err(|e| bad("headers", &e))?;
            let placement = raw
                .credential_header
                .as_deref()
                .map(CredentialPlacement::parse)
                .transpose()
                .map_err(|e| bad("credential_header", &e))?;
            if token.is_some() != placement.is_some() {
                return Err(bad("credential_header", "token and credential_header go together"));
            }
            SystemUpstream::Http { url, headers, placement }
        }
        "stdio" => {
            if raw.url.is_some() || !raw.headers.is_empty() || raw.credential_header.is_some() {
                return Err(bad("kind", "a stdio service has no url, headers or credential_header"));
            }
            let command = raw
                .command
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| bad("command", "is required for kind = \"stdio\""))?;
            let uses_token = raw.args.iter().chain(raw.env.values()).any(|v| v.contains(TOKEN_PLACEHOLDER));
            if token.is_some() && !uses_token {
                return Err(bad("token", "{token} appears in no argument or environment value"));
            }
            if token.is_none() && uses_token {
                return Err(bad("token", "{token} is used but no token name is given"));
            }
            SystemUpstream::Stdio { command, args: raw.args, env: raw.env }
        }
        other => return Err(bad("kind", &format!("\"{other}\" is not http or stdio"))),
    };
    let offered = raw.tools.as_deref().unwrap_or_default().join("\n");
    let roles: Vec<String> =
        raw.tool_roles.iter().map(|(tool, roles)| format!("{tool}: {}", roles.join(" "))).collect();
    let tool_policy = ToolPolicy::from_form(raw.tools.is_some(), &offered, &roles.join("\n"))
        .map_err(|(field, e)| bad(if field == "offered" { "tools" } else { "tool_roles" }, &e))?;
    Ok(SystemService {
        name,
        description: raw.description,
        version: raw.version,
        public: raw.public,
        transport,
        token,
        timeout_ms: (timeout * 1000) as i32,
        tool_policy,
    })
}

/// Reads the operator's file; the error is one line for the configuration message.
pub fn load(path: &Path) -> Result<OperatorFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    const EXAMPLE: &str = r#"
        [[service]]
        name = "github-projects"
        description = "GitHub project manager"
        kind = "stdio"
        command = "npx"
        args = ["-y", "@monsoft/mcp-github-project-manager", "--GITHUB_PERSONAL_TOKEN={token}"]
        token = "github"
        tools = ["list_projects", "create_issue"]
        tool_roles = { create_issue = ["admin", "developer"] }

        [[service]]
        name = "everything"
        kind = "http"
        url = "http://127.0.0.1:3001/mcp"
        headers = { "X-Team" = "platform" }
        token = "github"
        credential_header = "Authorization: Bearer {token}"
        timeout_seconds = 30
        public = false
    "#;

    #[test]
    fn the_readme_example_parses() {
        let services = parse(EXAMPLE).unwrap().services;
        assert_eq!(services.len(), 2);
        assert!(matches!(&services[0].transport, SystemUpstream::Stdio { command, .. } if command == "npx"));
        assert_eq!(services[0].token.as_ref().unwrap().as_str(), "github");
        assert!(services[0].public);
        let policy = &services[0].tool_policy;
        assert!(
            policy.allows("list_projects", Role::Viewer) && !policy.allows("delete_project", Role::Admin)
        );
        assert!(
            policy.allows("create_issue", Role::Developer) && !policy.allows("create_issue", Role::Viewer)
        );
        assert!(services[1].tool_policy.is_open());
        let SystemUpstream::Http { url, headers, placement } = &services[1].transport else { panic!("http") };
        assert_eq!(url.as_str(), "http://127.0.0.1:3001/mcp");
        assert_eq!(headers["X-Team"], "platform");
        assert_eq!(placement.as_ref().unwrap().render("t").1, "Bearer t");
        assert_eq!(services[1].timeout_ms, 30_000);
        assert!(!services[1].public);
    }

    #[test]
    fn mistakes_name_the_service_and_the_field() {
        let cases = [
            ("[[service]]\nname = \"x\"\nkind = \"ftp\"", "service \"x\": kind"),
            ("[[service]]\nname = \"x\"\nkind = \"http\"", "service \"x\": url: is required"),
            ("[[service]]\nname = \"x\"\nkind = \"stdio\"", "service \"x\": command: is required"),
            (
                "[[service]]\nname = \"x\"\nkind = \"stdio\"\ncommand = \"a\"\ntoken = \"github\"",
                "appears in no argument",
            ),
            ("[[service]]\nname = \"X Y\"\nkind = \"stdio\"\ncommand = \"a\"", "service \"X Y\": name"),
            (
                "[[service]]\nname = \"x\"\nkind = \"http\"\nurl = \"http://h/\"\ntoken = \"github\"",
                "go together",
            ),
            (
                "[[service]]\nname = \"x\"\nkind = \"stdio\"\ncommand = \"a\"\n[[service]]\nname = \"x\"\nkind = \"stdio\"\ncommand = \"b\"",
                "defined twice",
            ),
            ("[[service]]\nname = \"x\"\nkind = \"stdio\"\ncommand = \"a\"\nshell = true", "unknown field"),
            (
                "[[service]]\nname = \"x\"\nkind = \"stdio\"\ncommand = \"a\"\ntools = [\"a b\"]",
                "service \"x\": tools",
            ),
            (
                "[[service]]\nname = \"x\"\nkind = \"stdio\"\ncommand = \"a\"\ntool_roles = { a = [\"owner\"] }",
                "service \"x\": tool_roles",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?} gave {error:?}");
        }
    }
}
