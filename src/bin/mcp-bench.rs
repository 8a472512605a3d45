//! The gateway benchmark: tools/call `echo` straight to the test upstream and through the
//! platform, in alternating rounds, at concurrency 1 and 16; through the platform in 2025-11-25
//! sessions, and as stateless 2026-07-28 requests both to the upstream (which speaks that
//! revision too: relayed as they are) and to a second one pinned to 2025-11-25 (bridged by the
//! gateway in a session of its own). Prints requests per second,
//! p50/p99 latency, the throughput ratio, the added p50, the platform's peak memory and the
//! request log's bytes on disk per call, checks that log rows, usage counters and roll-ups equal
//! the calls made, and ends with one JSON line.
//!
//! cargo build --release --features test-upstream --bins && target/release/mcp-bench [--calls 2000 --rounds 3]
//! (build every binary: the benchmark starts the platform and the upstream from beside itself)
//!
//! `--path session|relayed|bridged|session-to-legacy` measures one path alone instead, at 4,000
//! requests a second with 16 clients, and prints the platform's CPU per call, in user space and
//! in the kernel (the instructions a profiler counts are the first only): the figure to compare
//! across builds or paths, in several runs taken in turn (the machine's spread between runs is
//! 10-20%). With it: the rate reached, and the upstream's CPU per call, which the platform
//! competes with for the machine's cores.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mcp_platform::clock::{Clock, SystemClock};
use mcp_platform::config::{DatabaseUrl, MasterKey};
use mcp_platform::crypto::api_key::ApiKey;
use mcp_platform::crypto::keyring::Binding;
use mcp_platform::db::{self, Db};
use mcp_platform::domain::{Email, Role};
use mcp_platform::ids::{KeyId, OrgId, ServiceId, UserId};
use serde_json::json;
use uuid::Uuid;

/// The paths `--path` measures alone: 2025-11-25 sessions, 2026-07-28 requests relayed as they
/// are, bridged to the upstream pinned to 2025-11-25, and sessions with that upstream.
const PATHS: [&str; 4] = ["session", "relayed", "bridged", "session-to-legacy"];
const PATH_PACE: f64 = 4000.0;
/// The revision the benchmark's sessions speak.
const SESSION_VERSION: &str = "2025-11-25";
/// The fewest rounds of the paced comparison of the paths.
const PACED_ROUNDS: usize = 5;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("no directory")?.join(name);
    if !path.exists() {
        bail!("{} is missing: build with --features test-upstream", path.display());
    }
    Ok(path)
}

fn flag(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Opens an MCP session at `url` and returns its id.
async fn open_session(client: &reqwest::Client, url: &str, key: Option<&str>) -> anyhow::Result<String> {
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":SESSION_VERSION,"capabilities":{},"clientInfo":{"name":"bench","version":"1"}}});
    let response = request(client, url, key, None).body(init.to_string()).send().await?;
    let session = response.headers().get("mcp-session-id").context("no session id")?.to_str()?.to_owned();
    response.text().await?;
    let done = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    request(client, url, key, Some(&session)).body(done.to_string()).send().await?.text().await?;
    Ok(session)
}

fn request(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    session: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut r = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json");
    if let Some(key) = key {
        r = r.header("authorization", format!("Bearer {key}"));
    }
    // As a conforming client of 2025-06-18 and later, every request after `initialize` names
    // the revision the session speaks.
    if let Some(session) = session {
        r = r.header("mcp-session-id", session).header("mcp-protocol-version", SESSION_VERSION);
    }
    r
}

struct Round {
    rps: f64,
    latencies: Vec<Duration>,
}

/// `calls` echo calls over `concurrency` sessions (or, `stateless`, as many 2026-07-28
/// clients), each as soon as the one before is answered or, with a `pace`, at that many calls
/// a second in all; returns the throughput and every latency.
async fn round(
    url: &str,
    key: Option<&str>,
    calls: usize,
    concurrency: usize,
    stateless: bool,
    pace: Option<f64>,
) -> anyhow::Result<Round> {
    let client = reqwest::Client::new();
    let mut sessions = Vec::new();
    for _ in 0..concurrency {
        sessions.push(if stateless { None } else { Some(open_session(&client, url, key).await?) });
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for (w, session) in sessions.into_iter().enumerate() {
        let (client, url, key) = (client.clone(), url.to_owned(), key.map(str::to_owned));
        let share = calls / concurrency + usize::from(w < calls % concurrency);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            // Paced, each worker sends every `concurrency / pace` seconds, the workers staggered.
            let every = pace.map(|pace| Duration::from_secs_f64(concurrency as f64 / pace));
            for i in 0..share {
                if let Some(every) = every {
                    let at = started + every.mul_f64(i as f64 + w as f64 / concurrency as f64);
                    tokio::time::sleep_until(at.into()).await;
                }
                let mut body = json!({"jsonrpc":"2.0","id":i + 1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"bench"}}});
                let mut request = request(&client, &url, key.as_deref(), session.as_deref());
                if stateless {
                    body["params"]["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                        "io.modelcontextprotocol/clientCapabilities": {}});
                    request = request
                        .header("mcp-protocol-version", "2026-07-28")
                        .header("mcp-method", "tools/call")
                        .header("mcp-name", "echo");
                }
                let t = Instant::now();
                let text = request.body(body.to_string()).send().await?.text().await?;
                latencies.push(t.elapsed());
                if !text.contains("\"result\"") {
                    bail!("unexpected answer: {text}");
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(calls);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let rps = calls as f64 / started.elapsed().as_secs_f64();
    Ok(Round { rps, latencies })
}

/// The middle of the figures (0 for none).
fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    figures.get(figures.len() / 2).copied().unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// CPU time a process has used so far (user and system), from /proc (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let (user, system) = cpu_times(pid);
    user + system
}

/// CPU time a process has used so far in user space, and in the kernel for it.
fn cpu_times(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map_or(vec![], |(_, rest)| rest.split(' ').collect());
    // After the command name: state is field 3, utime 14 and stime 15.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (Duration::from_millis(ticks(11) * 10), Duration::from_millis(ticks(12) * 10))
}

fn peak_memory_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn setup(db: &Db, master: &MasterKey, upstream: &str, legacy_upstream: &str) -> anyhow::Result<String> {
    let now = SystemClock.now();
    let org = OrgId::new();
    let user = UserId::new();
    let mut tx = db.begin().await?;
    db::organizations::insert(tx.conn(), org, "Bench", "bench", "bench@example.com", now).await?;
    // No quota and no rate limit: the benchmark measures the gateway, not the plan. (With
    // limits, each request also takes from a token bucket and the day's count, in memory.)
    db::organizations::set_plan(tx.conn(), org, "enterprise", now).await?;
    let email = Email::parse("bench@example.com").map_err(anyhow::Error::msg)?;
    let new_user = db::users::NewUser {
        id: user,
        organization_id: org,
        email: &email,
        password_hash: "x",
        role: Role::Developer,
    };
    db::users::insert(tx.conn(), new_user, now).await?;
    let headers = Vec::new();
    // The services' names are as long as each other, as routing and recording a call cost by
    // the byte: the paths differ only in what the gateway does.
    let service = db::services::ServiceFields {
        name: "either-echo",
        description: "",
        version: "",
        is_public: false,
        upstream_url: upstream,
        headers: &headers,
        token_service_name: Some("github"),
        token_placement: Some("Authorization: Bearer {token}"),
        timeout_ms: 60_000,
    };
    db::services::insert(tx.conn(), org, ServiceId::new(), &service, now).await?;
    let legacy =
        db::services::ServiceFields { name: "legacy-echo", upstream_url: legacy_upstream, ..service };
    db::services::insert(tx.conn(), org, ServiceId::new(), &legacy, now).await?;
    let key = ApiKey::generate();
    let row = db::api_keys::NewKey {
        id: KeyId::new(),
        organization_id: org,
        user_id: user,
        name: "bench",
        key_hash: &key.hash(),
        display_key: &key.display(),
        scopes: "mcp:read mcp:write",
        expires_at: None,
        rolled_from_id: None,
        rate_limit_per_minute: None,
        reach: None,
    };
    db::api_keys::insert(tx.conn(), row, now).await?;
    tx.commit().await?;
    let binding = Binding { organization_id: org, user_id: user, service_name: "github" };
    let sealed =
        master.token_keyring().seal(db, now, "ghp_benchmarkTokenValue000000000000000", binding).await?;
    let token = db::user_tokens::NewToken {
        organization_id: org,
        user_id: user,
        service_name: "github",
        ciphertext: &sealed.bytes,
        key_id: &sealed.key_id,
        last4: "0000",
    };
    db::user_tokens::upsert(db.acquire().await?.conn(), token, now).await?;
    Ok(key.expose().to_owned())
}

/// The test upstream on a free loopback port, with `args`; killed on drop.
fn start_upstream(args: &[&str]) -> anyhow::Result<(Killed, String)> {
    let mut upstream = Command::new(sibling("mcp-test-upstream")?)
        .args(["--http", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(upstream.stdout.take().context("stdout")?).read_line(&mut line)?;
    let url = line.trim().strip_prefix("listening on ").context("upstream address")?.to_owned();
    Ok((Killed(upstream), url))
}

fn start_platform(dir: &Path, secret: &str) -> anyhow::Result<(Killed, String)> {
    let mut child = Command::new(sibling("mcp-platform")?)
        .env("MCP_PLATFORM_DATA_DIR", dir)
        .env("MCP_PLATFORM_BIND", "127.0.0.1:0")
        // The benchmark's upstream is an organization's service on this machine's loopback.
        .env("MCP_PLATFORM_ALLOW_PRIVATE_UPSTREAMS", "127.0.0.1")
        .env("MCP_PLATFORM_SECRET_KEY", secret)
        .env("RUST_LOG", "warn,mcp_platform::cli=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let url = loop {
        let line = lines.next().context("the platform stopped")??;
        if let Some((_, url)) = line.split_once("MCP Platform is running: open ") {
            break url.trim_end_matches('/').to_owned();
        }
    };
    // Keep draining stderr so the platform never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((Killed(child), url))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let calls = flag(&args, "--calls", 2000);
    let rounds = flag(&args, "--rounds", 3);
    let path = args.iter().position(|a| a == "--path").and_then(|i| args.get(i + 1)).cloned();
    if let Some(path) = &path
        && !PATHS.contains(&path.as_str())
    {
        bail!("--path is one of {}, not {path}", PATHS.join(", "));
    }
    let dir = std::env::temp_dir().join(format!("mcp-bench-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;

    let (upstream, upstream_url) = start_upstream(&[])?;
    let upstream_pid = upstream.0.id();
    let (legacy_upstream, legacy_url) = start_upstream(&["--legacy-only"])?;

    let master = MasterKey::generate();
    let (platform, base) = start_platform(&dir, &master.encode())?;
    let pid = platform.0.id();
    let db =
        Db::connect(&DatabaseUrl::parse(&format!("sqlite://{}", dir.join("mcp-platform.db").display()))?)
            .await?;
    let key = setup(&db, &master, &upstream_url, &legacy_url).await?;
    let gateway_url = format!("{base}/mcp/either-echo");
    let bridged_url = format!("{base}/mcp/legacy-echo");

    if let Some(path) = path {
        let (url, stateless, upstream_pid) = match path.as_str() {
            "session" => (&gateway_url, false, upstream_pid),
            "relayed" => (&gateway_url, true, upstream_pid),
            "bridged" => (&bridged_url, true, legacy_upstream.0.id()),
            _ => (&bridged_url, false, legacy_upstream.0.id()),
        };
        // A first round to warm up, not counted.
        for counted in [false, true] {
            let ((user, system), upstream_cpu) = (cpu_times(pid), cpu_time(upstream_pid));
            let mut rps = 0.0;
            for _ in 0..if counted { rounds } else { 1 } {
                rps +=
                    round(url, Some(&key), calls, 16, stateless, Some(PATH_PACE)).await?.rps / rounds as f64;
            }
            if counted {
                let (user_after, system_after) = cpu_times(pid);
                let per_call = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (calls * rounds) as f64;
                let (user, system) = (per_call(user_after - user), per_call(system_after - system));
                // (What the platform competes with for the machine's cores.)
                let upstream = per_call(cpu_time(upstream_pid) - upstream_cpu);
                println!(
                    "{path} at {PATH_PACE} req/s (reached {rps:.0}): platform CPU per call {:.1} us (user {user:.1}, system {system:.1}); upstream CPU per call {upstream:.1} us",
                    user + system
                );
            }
        }
        return Ok(());
    }
    let mut report = serde_json::Map::new();
    let mut gateway_messages = 0usize;
    for concurrency in [1usize, 16] {
        let calls = if concurrency == 1 { calls / 4 } else { calls };
        let (mut direct, mut through, mut stateless, mut bridged) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut direct_rps, mut through_rps, mut stateless_rps, mut bridged_rps) = (0.0, 0.0, 0.0, 0.0);
        let (mut platform_cpu, mut upstream_cpu) = (Duration::ZERO, Duration::ZERO);
        let (mut stateless_cpu, mut bridged_cpu) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let d = round(&upstream_url, None, calls, concurrency, false, None).await?;
            let (platform_before, upstream_before) = (cpu_time(pid), cpu_time(upstream_pid));
            let g = round(&gateway_url, Some(&key), calls, concurrency, false, None).await?;
            platform_cpu += cpu_time(pid) - platform_before;
            upstream_cpu += cpu_time(upstream_pid) - upstream_before;
            let stateless_before = cpu_time(pid);
            let s = round(&gateway_url, Some(&key), calls, concurrency, true, None).await?;
            stateless_cpu += cpu_time(pid) - stateless_before;
            let bridged_before = cpu_time(pid);
            let b = round(&bridged_url, Some(&key), calls, concurrency, true, None).await?;
            bridged_cpu += cpu_time(pid) - bridged_before;
            bridged_rps += b.rps / rounds as f64;
            bridged.extend(b.latencies);
            gateway_messages += calls + 2 * concurrency + calls + calls;
            direct_rps += d.rps / rounds as f64;
            through_rps += g.rps / rounds as f64;
            stateless_rps += s.rps / rounds as f64;
            direct.extend(d.latencies);
            through.extend(g.latencies);
            stateless.extend(s.latencies);
        }
        direct.sort();
        through.sort();
        stateless.sort();
        bridged.sort();
        let (sp50, sp99) = (percentile(&stateless, 0.5), percentile(&stateless, 0.99));
        let (bp50, bp99) = (percentile(&bridged, 0.5), percentile(&bridged, 0.99));
        let (dp50, dp99, gp50, gp99) = (
            percentile(&direct, 0.5),
            percentile(&direct, 0.99),
            percentile(&through, 0.5),
            percentile(&through, 0.99),
        );
        // CPU per gateway call, in microseconds: the platform's, and the upstream's for comparison.
        let per_call = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (calls * rounds) as f64;
        // The paths' CPU per call at full speed depends on how fast each goes (the upstream
        // spends more on a stateless request, and fewer calls a second share each wake-up of
        // the platform): compared again at one pace below the slowest.
        let pace = 0.7 * through_rps.min(stateless_rps).min(bridged_rps);
        // Each path's CPU per call in each round; the median round is reported, as this
        // machine's speed drifts from one round to the next.
        let mut paced: [Vec<f64>; 3] = Default::default();
        if concurrency > 1 {
            let arms = [(&gateway_url, false), (&gateway_url, true), (&bridged_url, true)];
            for r in 0..rounds.max(PACED_ROUNDS) {
                // Each round starts with another path, so that none always follows the same one
                // (and meets the request-log writes of its calls).
                for arm in (0..arms.len()).map(|i| (i + r) % arms.len()) {
                    let (url, stateless) = arms[arm];
                    let before = cpu_time(pid);
                    round(url, Some(&key), calls, concurrency, stateless, Some(pace)).await?;
                    paced[arm].push((cpu_time(pid) - before).as_secs_f64() * 1e6 / calls as f64);
                }
                gateway_messages += calls + 2 * concurrency + calls + calls;
            }
        }
        let [paced_session_us, paced_relayed_us, paced_bridged_us] = paced.map(median);
        let (platform_us, upstream_us) = (per_call(platform_cpu), per_call(upstream_cpu));
        let (stateless_us, bridged_us) = (per_call(stateless_cpu), per_call(bridged_cpu));
        println!(
            "concurrency {concurrency:>2}: direct {direct_rps:>8.0} req/s p50 {dp50:.2} ms p99 {dp99:.2} ms | gateway {through_rps:>8.0} req/s p50 {gp50:.2} ms p99 {gp99:.2} ms | ratio {:.2} | added p50 {:.2} ms | CPU per call: platform {platform_us:.0} us, upstream {upstream_us:.0} us",
            through_rps / direct_rps,
            gp50 - dp50
        );
        println!(
            "               2026-07-28, relayed as it is: {stateless_rps:>8.0} req/s p50 {sp50:.2} ms p99 {sp99:.2} ms | platform CPU per call {stateless_us:.0} us"
        );
        println!(
            "               2026-07-28, bridged to 2025-11-25: {bridged_rps:>8.0} req/s p50 {bp50:.2} ms p99 {bp99:.2} ms | platform CPU per call {bridged_us:.0} us"
        );
        if concurrency > 1 {
            println!(
                "               all at {pace:.0} req/s, median of {} rounds: platform CPU per call: session {paced_session_us:.0} us, relayed {paced_relayed_us:.0} us, bridged {paced_bridged_us:.0} us",
                rounds.max(PACED_ROUNDS)
            );
        }
        report.insert(
            format!("c{concurrency}"),
            json!({
                "direct_rps": direct_rps.round(), "gateway_rps": through_rps.round(),
                "direct_p50_ms": dp50, "direct_p99_ms": dp99, "gateway_p50_ms": gp50, "gateway_p99_ms": gp99,
                "throughput_ratio": through_rps / direct_rps, "added_p50_ms": gp50 - dp50,
                "platform_cpu_us_per_call": platform_us, "upstream_cpu_us_per_call": upstream_us,
                "stateless_rps": stateless_rps.round(), "stateless_p50_ms": sp50, "stateless_p99_ms": sp99,
                "stateless_platform_cpu_us_per_call": stateless_us,
                "bridged_rps": bridged_rps.round(), "bridged_p50_ms": bp50, "bridged_p99_ms": bp99,
                "bridged_platform_cpu_us_per_call": bridged_us,
            }),
        );
        if concurrency > 1 {
            let paced = json!({ "rps": pace.round(), "session_cpu_us_per_call": paced_session_us,
                "relayed_cpu_us_per_call": paced_relayed_us, "bridged_cpu_us_per_call": paced_bridged_us });
            report.insert(format!("c{concurrency}_paced"), paced);
        }
    }
    let peak_kib = peak_memory_kib(pid);
    // A graceful stop writes every queued log row.
    Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    let mut platform = platform;
    platform.0.wait()?;
    let rows: i64 = match &db {
        Db::Sqlite(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM request_logs").fetch_one(pool).await?,
        Db::Postgres(_) => unreachable!("the benchmark runs on SQLite"),
    };
    let counted: i64 =
        match &db {
            Db::Sqlite(pool) => sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(request_count), 0) AS BIGINT) FROM service_usage WHERE day IS NULL",
            )
            .fetch_one(pool)
            .await?,
            Db::Postgres(_) => unreachable!(),
        };
    let (rolled_up, log_bytes): (i64, i64) = match &db {
        Db::Sqlite(pool) => (
            sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM usage_rollups WHERE level = 0 AND grain = 2",
            )
            .fetch_one(pool)
            .await?,
            // The table and its indexes, page by page.
            sqlx::query_scalar(
                "SELECT CAST(SUM(pgsize) AS BIGINT) FROM dbstat WHERE name IN \
                 (SELECT name FROM sqlite_schema WHERE tbl_name = 'request_logs')",
            )
            .fetch_one(pool)
            .await?,
        ),
        Db::Postgres(_) => unreachable!(),
    };
    let bytes_per_call = log_bytes as f64 / rows.max(1) as f64;
    println!("request logs on disk: {log_bytes} bytes for {rows} calls, {bytes_per_call:.0} bytes per call");
    report.insert("log_bytes_per_call".into(), json!(bytes_per_call.round()));
    let consistent = rows == gateway_messages as i64 && counted == rows && rolled_up == rows;
    println!(
        "platform peak memory {} MiB; log rows {rows}, usage count {counted}, rolled up {rolled_up}, gateway messages sent {gateway_messages}: {}",
        peak_kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        if consistent { "all recorded" } else { "MISMATCH" }
    );
    report.insert("peak_memory_mib".into(), json!(peak_kib.map(|k| k as f64 / 1024.0)));
    report.insert("log_rows".into(), json!(rows));
    report.insert("usage_count".into(), json!(counted));
    report.insert("gateway_messages".into(), json!(gateway_messages));
    report.insert("all_recorded".into(), json!(consistent));
    db.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", serde_json::Value::Object(report));
    if !consistent {
        bail!("log rows or counters do not match the calls made");
    }
    Ok(())
}
