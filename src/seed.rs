//! `dev seed`: fills an organization of a test database with realistic request logs and the
//! usage counters and roll-ups that match them, written the way the gateway's writer writes
//! them, so that pages can be tried and measured at any size.

use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use secrecy::SecretString;

use crate::crypto::api_key::ApiKey;
use crate::db::request_logs::{NewRequestLog, Outcome};
use crate::db::{self, Db};
use crate::domain::{Email, OrganizationName, Role};
use crate::ids::{KeyId, LogId, OrgId, ServiceId, UserId};
use crate::telemetry::writer::{Tally, write_tallied};

/// What to write.
pub struct SeedPlan {
    pub organization: OrganizationName,
    pub requests: u64,
    pub days: u32,
    /// Write even when the organization already has request logs.
    pub force: bool,
}

/// What was written.
pub struct SeedReport {
    pub rows: u64,
    pub seconds: f64,
}

/// Rows per transaction: large enough that a transaction (and the checkpoint after it) costs
/// little per row.
const BATCH: usize = 50_000;
/// Members and services the seed adds when the organization has fewer.
const SEED_MEMBERS: usize = 4;
const SEED_SERVICES: [(&str, &[&str]); 3] = [
    ("github", &["search_issues", "get_issue", "create_issue", "list_pull_requests", "get_file_contents"]),
    ("jira", &["search", "get_ticket", "transition", "add_comment"]),
    ("docs-search", &["search", "fetch_page"]),
];
/// The tool of one call in 100,000.
pub const RARE_TOOL: &str = "rotate_credentials";
const GENERIC_TOOLS: &[&str] = &["search", "get", "create", "update"];
const USER_AGENTS: &[&str] =
    &["claude-code/2.1.3", "Cursor/1.7.2", "python-httpx/0.28.1 mcp/2.3.0", "node mcp-sdk/2.0.1"];

/// One member who makes calls, with the key they use.
struct Caller {
    user: UserId,
    key: KeyId,
    ip: String,
    user_agent: &'static str,
}

struct Target {
    id: ServiceId,
    name: String,
    tools: Vec<String>,
}

/// Seeds `plan` into the database and says what it did on standard error as it goes.
pub async fn seed(db: &Db, plan: &SeedPlan, now: DateTime<Utc>) -> anyhow::Result<SeedReport> {
    let (organization_id, callers, targets) = prepare(db, plan, now).await?;
    let since = now - Duration::days(i64::from(plan.days));
    db.ensure_log_partitions_since(since, now).await?;
    eprintln!(
        "writing {} request-log rows over {} days to \"{}\": {} services ({}), {} members with a key each, \
         and their usage roll-ups",
        plan.requests,
        plan.days,
        plan.organization.as_str(),
        targets.len(),
        targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "),
        callers.len()
    );

    let started = Instant::now();
    let span = (now - since).num_microseconds().context("--days: too long a span")?;
    // Rows and their tallies are made on a thread of their own while the batch before is written.
    let (batches, mut ready) = tokio::sync::mpsc::channel::<(Vec<NewRequestLog>, Tally)>(2);
    let requests = plan.requests;
    let maker = tokio::task::spawn_blocking(move || {
        let mut rng = SmallRng::seed_from_u64(requests);
        let step = span as f64 / requests as f64;
        let mut batch = Vec::with_capacity(BATCH);
        for n in 0..requests {
            let offset = (n as f64 * step + rng.random::<f64>() * step) as i64;
            let at = since + Duration::microseconds(offset.min(span - 1));
            batch.push(call(&mut rng, organization_id, &callers, &targets, at, n));
            if batch.len() == BATCH || n + 1 == requests {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                let tally = Tally::of(&full);
                if batches.blocking_send((full, tally)).is_err() {
                    return;
                }
            }
        }
    });
    let mut written = 0u64;
    while let Some((batch, tally)) = ready.recv().await {
        write_tallied(db, now, &batch, &tally).await.context("cannot write the seeded rows")?;
        written += batch.len() as u64;
        if written % 1_000_000 < BATCH as u64 {
            eprintln!("  {written} rows");
        }
    }
    maker.await.context("making the rows failed")?;
    Ok(SeedReport { rows: written, seconds: started.elapsed().as_secs_f64() })
}

/// Finds or creates the organization, its callers (members with a key) and services, and
/// refuses an organization with logs unless forced.
async fn prepare(
    db: &Db,
    plan: &SeedPlan,
    now: DateTime<Utc>,
) -> anyhow::Result<(OrgId, Vec<Caller>, Vec<Target>)> {
    let slug = plan.organization.slug();
    let mut tx = db.begin().await?;
    let contact = format!("seed@{slug}.invalid");
    let organization_id =
        db::organizations::find_or_create(tx.conn(), &plan.organization, &contact, now).await?;
    if db::request_logs::any_for_organization(tx.conn(), organization_id).await? && !plan.force {
        anyhow::bail!(
            "--org: \"{}\" already has request logs; add --force to write more",
            plan.organization.as_str()
        );
    }

    let mut members: Vec<_> = db::users::list_members(tx.conn(), organization_id)
        .await?
        .into_iter()
        .filter(|u| u.is_active && u.role != Role::Viewer)
        .map(|u| u.id)
        .collect();
    if members.len() < SEED_MEMBERS {
        // Seed members cannot sign in: their password is random and never shown.
        let password = SecretString::from(ApiKey::generate().expose().to_owned());
        let hash = crate::auth::password::Passwords::new()?.hash(password).await?;
        for n in members.len()..SEED_MEMBERS {
            let email = Email::parse(&format!("seed-developer-{n}@{slug}.invalid"))
                .map_err(|e| anyhow::anyhow!("seed member email: {e}"))?;
            if db::users::email_exists(tx.conn(), email.as_str()).await? {
                continue;
            }
            let id = UserId::new();
            let user = db::users::NewUser {
                id,
                organization_id,
                email: &email,
                password_hash: &hash,
                role: Role::Developer,
            };
            db::users::insert(tx.conn(), user, now).await?;
            members.push(id);
        }
    }

    let mut callers = Vec::new();
    for (n, user) in members.into_iter().enumerate() {
        let keys = db::api_keys::list_for_user(tx.conn(), organization_id, user).await?;
        let key = match keys.iter().find(|k| k.status(now).works()) {
            Some(key) => key.id,
            None => {
                let secret = ApiKey::generate();
                let id = KeyId::new();
                let key = db::api_keys::NewKey {
                    id,
                    organization_id,
                    user_id: user,
                    name: "seed",
                    key_hash: &secret.hash(),
                    display_key: &secret.display(),
                    scopes: "mcp:read mcp:write",
                    expires_at: None,
                    rolled_from_id: None,
                    rate_limit_per_minute: None,
                    reach: None,
                };
                db::api_keys::insert(tx.conn(), key, now).await?;
                id
            }
        };
        callers.push(Caller {
            user,
            key,
            ip: format!("10.20.{}.{}", n / 200, n % 200 + 10),
            user_agent: USER_AGENTS[n % USER_AGENTS.len()],
        });
    }

    let existing = db::services::catalog(tx.conn(), organization_id).await?;
    let mut targets: Vec<Target> = existing
        .iter()
        .map(|s| {
            let tools =
                SEED_SERVICES.iter().find(|(name, _)| *name == s.name).map_or(GENERIC_TOOLS, |(_, t)| t);
            Target { id: s.id, name: s.name.clone(), tools: tools.iter().map(|t| t.to_string()).collect() }
        })
        .collect();
    for (name, tools) in SEED_SERVICES {
        if targets.iter().any(|t| t.name == name) {
            continue;
        }
        let id = ServiceId::new();
        let fields = db::services::ServiceFields {
            name,
            description: "Seeded for trying the platform with data",
            version: "1.0.0",
            is_public: true,
            upstream_url: &format!("https://{name}.seed.invalid/mcp"),
            headers: &[],
            token_service_name: None,
            token_placement: None,
            timeout_ms: 30_000,
        };
        db::services::insert(tx.conn(), organization_id, id, &fields, now).await?;
        targets.push(Target {
            id,
            name: name.to_owned(),
            tools: tools.iter().map(|t| t.to_string()).collect(),
        });
    }
    tx.commit().await?;
    Ok((organization_id, callers, targets))
}

/// One call as the gateway would have recorded it: mostly tool calls, some listings and
/// handshakes, a few percent tool errors and failures, durations spread over a long tail.
fn call(
    rng: &mut SmallRng,
    organization_id: OrgId,
    callers: &[Caller],
    targets: &[Target],
    at: DateTime<Utc>,
    n: u64,
) -> NewRequestLog {
    // A few members and services make most of the calls.
    let caller = &callers[skewed(rng, callers.len())];
    let target = &targets[skewed(rng, targets.len())];
    let pick: f64 = rng.random();
    let (method, tool) = match pick {
        // One call in 100,000 is to a rare tool, for trying rare filters.
        _ if n % 100_000 == 50_000 => ("tools/call", Some(RARE_TOOL.to_owned())),
        p if p < 0.82 => ("tools/call", Some(target.tools[skewed(rng, target.tools.len())].clone())),
        p if p < 0.92 => ("tools/list", None),
        p if p < 0.97 => ("initialize", None),
        _ => ("ping", None),
    };
    let roll: f64 = rng.random();
    let outcome = if roll < 0.03 {
        Outcome::Failure
    } else if tool.is_some() && roll < 0.07 {
        Outcome::ToolError
    } else {
        Outcome::Success
    };
    // Log-normal around 40 ms; failures that time out are slow.
    let normal = (-2.0 * rng.random::<f64>().max(1e-12).ln()).sqrt()
        * (std::f64::consts::TAU * rng.random::<f64>()).cos();
    let duration_ms = ((40f64.ln() + normal).exp() as i64).clamp(0, 30_000);
    let request_id = n % 10_000;
    let request_body = match &tool {
        Some(tool) => format!(
            r#"{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"query":"label:bug state:open","limit":{}}}}}}}"#,
            rng.random_range(5..50)
        ),
        None => format!(r#"{{"jsonrpc":"2.0","id":{request_id},"method":"{method}","params":{{}}}}"#),
    };
    let (http_status, error_code, error_message, response_body) = match outcome {
        Outcome::Failure => (
            502,
            Some(-32603),
            Some("the upstream service failed".to_owned()),
            format!(
                r#"{{"jsonrpc":"2.0","id":{request_id},"error":{{"code":-32603,"message":"the upstream service failed"}}}}"#
            ),
        ),
        Outcome::ToolError => (
            200,
            None,
            None,
            format!(
                r#"{{"jsonrpc":"2.0","id":{request_id},"result":{{"content":[{{"type":"text","text":"Not found: no such issue"}}],"isError":true}}}}"#
            ),
        ),
        Outcome::Success => (
            200,
            None,
            None,
            format!(
                r#"{{"jsonrpc":"2.0","id":{request_id},"result":{{"content":[{{"type":"text","text":"{} results"}}]}}}}"#,
                rng.random_range(0..40)
            ),
        ),
    };
    NewRequestLog {
        id: LogId::at(at),
        organization_id,
        user_id: Some(caller.user),
        api_key_id: Some(caller.key),
        mcp_service_id: Some(target.id),
        service_name: target.name.clone(),
        method: Some(method.to_owned()),
        tool_name: tool,
        // A client session lasts about an hour.
        session_tag: Some((at.timestamp() / 3600) ^ (caller.user.as_uuid().as_u128() as i64)),
        request_body: Some(request_body),
        response_body: Some(response_body),
        request_truncated: false,
        response_truncated: false,
        outcome,
        http_status,
        error_code,
        error_message,
        duration_ms,
        ip: Some(caller.ip.clone()),
        user_agent: Some(caller.user_agent.to_owned()),
        created_at: at,
        quota_counted: false,
        stateless: false,
    }
}

/// An index in `0..len`, the first ones more often (each about twice as likely as the next
/// but one).
fn skewed(rng: &mut SmallRng, len: usize) -> usize {
    let x: f64 = rng.random();
    ((x * x) * len as f64) as usize % len.max(1)
}
