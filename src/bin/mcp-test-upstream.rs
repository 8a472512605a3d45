//! A small MCP server, written with rmcp, for the tests and the benchmark. Not part of the
//! product. Tools: `echo`, `add`, `slow` (sleeps), `big` (about 1 MiB), and `whoami` (the
//! credential it received, to prove injection), `roots` (asks the client for its roots, to
//! prove that server-to-client requests travel both ways), and `notify_later` (a notification
//! outside any request, which travels on the session's GET stream).
//!
//! mcp-test-upstream --http 127.0.0.1:0 [--legacy-only]
//!     prints "listening on http://ADDR/mcp", then serves (--legacy-only: 2025-11-25 and before
//!     only, refusing a 2026-07-28 request with a plain 400, as a server of that era does)
//! mcp-test-upstream --stdio [--credential X] [--announce]
//!     serves on stdin/stdout; X (or the environment variable MCP_TEST_CREDENTIAL) is what whoami
//!     says; --announce first prints its arguments on stdout and stderr, as some servers do

use std::time::Duration;

use axum::response::IntoResponse;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// The text to send back.
    text: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct AddArgs {
    a: i64,
    b: i64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct SlowArgs {
    /// How long to wait, in milliseconds (at most 60 000).
    ms: u64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct LaterArgs {
    /// How long to wait before telling the client, in milliseconds (at most 60 000).
    ms: u64,
}

#[derive(Clone)]
struct Upstream {
    tool_router: ToolRouter<Self>,
    /// For stdio: the credential given on the command line or in the environment.
    credential: Option<String>,
}

#[tool_router]
impl Upstream {
    fn new(credential: Option<String>) -> Self {
        Upstream { tool_router: Self::tool_router(), credential }
    }

    #[tool(description = "Returns the text it is given")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Adds two integers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        a.saturating_add(b).to_string()
    }

    #[tool(description = "Waits the given number of milliseconds, then answers")]
    async fn slow(&self, Parameters(SlowArgs { ms }): Parameters<SlowArgs>) -> String {
        let ms = ms.min(60_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("slept {ms} ms")
    }

    #[tool(description = "Returns about 1 MiB of text")]
    fn big(&self) -> String {
        "0123456789abcdef".repeat(64 * 1024)
    }

    #[tool(
        description = "Answers at once, then tells the client a while later that the tool list changed: a message outside any request"
    )]
    fn notify_later(
        &self,
        Parameters(LaterArgs { ms }): Parameters<LaterArgs>,
        context: RequestContext<RoleServer>,
    ) -> String {
        let ms = ms.min(60_000);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = context.peer.notify_tool_list_changed().await;
        });
        format!("will notify in {ms} ms")
    }

    #[tool(description = "Always reports a failure of the tool itself: a result with isError")]
    fn fail(&self) -> Result<String, String> {
        Err("the tool failed, as it always does".to_owned())
    }

    // Roots are deprecated for protocol versions after 2025-11-25, which the gateway serves.
    #[allow(deprecated)]
    #[tool(description = "Asks the client for its roots and returns their URIs, one per line")]
    async fn roots(&self, context: RequestContext<RoleServer>) -> Result<String, String> {
        let roots = context.peer.list_roots().await.map_err(|e| e.to_string())?;
        Ok(roots.roots.iter().map(|root| root.uri.as_str()).collect::<Vec<_>>().join("\n"))
    }

    #[tool(
        description = "Returns the credential this server received: the Authorization header over HTTP, the configured credential over stdio"
    )]
    fn whoami(&self, context: RequestContext<RoleServer>) -> String {
        let header = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.headers.get("authorization"))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        header.or_else(|| self.credential.clone()).unwrap_or_else(|| "nobody".to_owned())
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Upstream {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build())
            .with_instructions("The MCP Platform's test upstream")
    }
}

const USAGE: &str =
    "usage: mcp-test-upstream --http ADDR [--legacy-only] | --stdio [--credential X] [--announce]

  --http ADDR       serve Streamable HTTP at http://ADDR/mcp (port 0: any free port, printed)
  --legacy-only     refuse 2026-07-28 requests (plain 400), as a 2025-11-25 server does
  --stdio           serve over stdin and stdout
  --credential X    the credential whoami returns over stdio (or MCP_TEST_CREDENTIAL)
  --announce        print the arguments on stdout and stderr at start (as some servers do)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    if args.iter().any(|a| a == "--stdio") {
        let credential = flag("--credential").or_else(|| std::env::var("MCP_TEST_CREDENTIAL").ok());
        if args.iter().any(|a| a == "--announce") {
            println!("mcp-test-upstream starting with {args:?}");
            eprintln!("mcp-test-upstream starting with {args:?}");
        }
        let server = Upstream::new(credential).serve(rmcp::transport::stdio()).await?;
        server.waiting().await?;
        return Ok(());
    }
    let Some(address) = flag("--http") else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let service: StreamableHttpService<Upstream, LocalSessionManager> = StreamableHttpService::new(
        || Ok(Upstream::new(None)),
        Default::default(),
        StreamableHttpServerConfig::default(),
    );
    let mut router = axum::Router::new().nest_service("/mcp", service);
    if args.iter().any(|a| a == "--legacy-only") {
        router = router.layer(axum::middleware::from_fn(refuse_stateless));
    }
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    // Small SSE writes must not wait for Nagle's algorithm (a 40 ms stall per answer).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await?;
    Ok(())
}

/// A 2026-07-28 request (it says so in its MCP-Protocol-Version header) gets what a server that
/// predates that revision answers: 400 without a JSON-RPC error.
async fn refuse_stateless(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let stateless = request.headers().get("mcp-protocol-version").is_some_and(|v| v == "2026-07-28");
    if stateless {
        return (axum::http::StatusCode::BAD_REQUEST, "Bad Request: unsupported protocol version")
            .into_response();
    }
    next.run(request).await
}
