//! Request-log rows written straight to the database, for pages and upkeep that read many.

use chrono::{DateTime, Utc};
use mcp_platform::db::request_logs::{NewRequestLog, Outcome};
use mcp_platform::ids::{KeyId, LogId, OrgId, ServiceId, UserId};

use super::gateway::{api_key, key_id};
use super::{TestApp, TestUser};

/// Where rows written straight to the database belong.
#[derive(Clone, Copy)]
pub struct Caller {
    pub org: OrgId,
    pub user: UserId,
    pub key: KeyId,
    pub service: ServiceId,
}

pub fn call_row(caller: Caller, tool: &str, outcome: Outcome, at: DateTime<Utc>) -> NewRequestLog {
    NewRequestLog {
        id: LogId::at(at),
        organization_id: caller.org,
        user_id: Some(caller.user),
        api_key_id: Some(caller.key),
        mcp_service_id: Some(caller.service),
        service_name: "tools".into(),
        method: Some("tools/call".into()),
        tool_name: Some(tool.into()),
        session_tag: Some(7),
        request_body: Some(format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#
        )),
        response_body: Some(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#.into()),
        request_truncated: false,
        response_truncated: false,
        outcome,
        http_status: 200,
        error_code: None,
        error_message: None,
        duration_ms: 12,
        ip: Some("192.0.2.7".into()),
        user_agent: Some("test-client/1.0".into()),
        created_at: at,
        quota_counted: false,
        stateless: false,
    }
}

/// An organization with a service and a developer holding a key, as ids for written rows.
pub async fn caller(app: &TestApp, org: OrgId, user: &TestUser) -> Caller {
    let raw = api_key(app, org, user, "mcp:read mcp:write").await;
    let service = mcp_platform::db::services::find_for_organization(
        app.db.acquire().await.unwrap().conn(),
        org,
        "tools",
    )
    .await
    .unwrap()
    .unwrap()
    .id;
    Caller { org, user: user.id, key: key_id(app, &raw).await, service }
}
